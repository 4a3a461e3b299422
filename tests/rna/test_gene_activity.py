"""Gene activity against a brute-force count written from the window definition alone.

The reference below builds each gene's windows with plain Python from the documented
geometry and counts fragments (or peak values) window by window; it shares no code with
the package (genes are read with gzip/pandas, fragments with pandas). Real data: the muon
PBMC multiome fragments (hg38) with genes at the RNA features' coordinates, the MACS3 chr22
fragments with the GENCODE v33 chr22 GTF, and the sci-CAR A549 peak matrix (hg19) with
ArchR's hg19 genes; edge cases on small synthetic files.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import atacformer as af
from atacformer.cli import main
from atacformer.errors import GenomeMismatchError, InputFormatError
from atacformer.io import read_genes

MUON = "muon_pbmc_multiome_fragments_hg38"
WEIGHTS = (1 / 2, 1 / 3, 1 / 6)


# -- the reference ------------------------------------------------------------------------
def ref_windows(start, end, strand, length=None):
    """A gene's ``(start, end, weight)`` windows, straight from the definition."""
    if strand == "+":
        tss = start
        up = [(tss - 10_000, tss), (tss - 20_000, tss - 10_000), (tss - 50_000, tss - 20_000)]
        far = max(tss + 10_000, end)
        down = [(tss, far), (far, far + 10_000), (far + 10_000, far + 40_000)]
    else:
        b = end  # the TSS is base end - 1
        up = [(b, b + 10_000), (b + 10_000, b + 20_000), (b + 20_000, b + 50_000)]
        far = min(b - 10_000, start)
        down = [(far, b), (far - 10_000, far), (far - 40_000, far - 10_000)]
    out = []
    for (s, e), w in zip(up + down, WEIGHTS + WEIGHTS):
        s, e = max(s, 0), e if length is None else min(e, length)
        if e > s:
            out.append((s, e, w))
    return out


def ref_activity(frags: pd.DataFrame, genes: pd.DataFrame, mode="fragment", lengths=None) -> np.ndarray:
    """Cells (``frags.cell`` codes) x genes, one window at a time, vectorised over fragments."""
    n_cells = int(frags["cell"].max()) + 1
    out = np.zeros((n_cells, len(genes)))
    by_chrom = {c: (d["start"].to_numpy(), d["end"].to_numpy(), d["cell"].to_numpy())
                for c, d in frags.groupby("chrom", observed=True)}
    for j, g in enumerate(genes.itertuples()):
        if g.chrom not in by_chrom:
            continue
        s, e, cell = by_chrom[g.chrom]
        for ws, we, w in ref_windows(g.start, g.end, g.strand, None if lengths is None else lengths[g.chrom]):
            if mode == "fragment":
                n = np.bincount(cell[(s < we) & (e > ws)], minlength=n_cells)
            else:  # the two Tn5 insertion sites s and e - 1
                n = (np.bincount(cell[(s >= ws) & (s < we)], minlength=n_cells)
                     + np.bincount(cell[(e - 1 >= ws) & (e - 1 < we)], minlength=n_cells))
            out[:, j] += w * n
    return out


def ref_activity_loop(frags, genes, mode="fragment", lengths=None) -> dict:
    """``{(barcode, gene_name): activity}`` by a plain loop: per gene, per window, per fragment."""
    out: dict = {}
    for g in genes.itertuples():
        for ws, we, w in ref_windows(g.start, g.end, g.strand, None if lengths is None else lengths[g.chrom]):
            for f in frags.itertuples():
                if f.chrom != g.chrom:
                    continue
                if mode == "fragment":
                    n = int(max(f.start, ws) < min(f.end, we))
                else:
                    n = int(ws <= f.start < we) + int(ws <= f.end - 1 < we)
                if n:
                    out[(f.barcode, g.gene_name)] = out.get((f.barcode, g.gene_name), 0.0) + w * n
    return out


def read_fragments(path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", header=None, comment="#", usecols=[0, 1, 2, 3],
                     names=["chrom", "start", "end", "barcode"])
    df["cell"], uniq = pd.factorize(df["barcode"])  # rows in order of first appearance
    df.attrs["barcodes"] = list(uniq)
    return df


def gtf_genes(path) -> pd.DataFrame:
    """``gene`` records of a GTF, 1-based inclusive -> 0-based half-open, by plain parsing."""
    rows = []
    with gzip.open(path, "rt") as f:
        for line in f:
            if line.startswith("#"):
                continue
            c = line.rstrip("\n").split("\t")
            if c[2] != "gene":
                continue
            attrs = dict(kv.strip().split(" ", 1) for kv in c[8].split(";") if kv.strip())
            rows.append((c[0], int(c[3]) - 1, int(c[4]), c[6], attrs["gene_name"].strip('"'),
                         attrs["gene_id"].strip('"')))
    return pd.DataFrame(rows, columns=["chrom", "start", "end", "strand", "gene_name", "gene_id"])


def dense(adata) -> np.ndarray:
    return np.asarray(adata.X.todense(), dtype=np.float64)


# -- window geometry ----------------------------------------------------------------------
SIZES = {"chr1": 200_000, "chr2": 90_000}
# name, chrom, start, end, strand, expected windows (start, end) up 0-10, 10-20, 20-50 then down
EDGE_GENES = [
    ("P", "chr1", 60_000, 62_000, "+", [(50_000, 60_000), (40_000, 50_000), (10_000, 40_000),
                                        (60_000, 70_000), (70_000, 80_000), (80_000, 110_000)]),
    ("LONG", "chr1", 120_000, 145_000, "+", [(110_000, 120_000), (100_000, 110_000), (70_000, 100_000),
                                             (120_000, 145_000), (145_000, 155_000), (155_000, 185_000)]),
    ("M", "chr1", 30_000, 33_000, "-", [(33_000, 43_000), (43_000, 53_000), (53_000, 83_000),
                                        (23_000, 33_000), (13_000, 23_000), (0, 13_000)]),
    ("END", "chr1", 190_000, 195_000, "-", [(195_000, 200_000), None, None,
                                            (185_000, 195_000), (175_000, 185_000), (145_000, 175_000)]),
    ("START", "chr1", 5_000, 6_000, "+", [(0, 5_000), None, None,
                                          (5_000, 15_000), (15_000, 25_000), (25_000, 55_000)]),
    ("LONGM", "chr1", 150_000, 180_000, "-", [(180_000, 190_000), (190_000, 200_000), None,
                                              (150_000, 180_000), (140_000, 150_000), (110_000, 140_000)]),
    ("C2", "chr2", 45_000, 46_000, "+", [(35_000, 45_000), (25_000, 35_000), (0, 25_000),
                                         (45_000, 55_000), (55_000, 65_000), (65_000, 90_000)]),
]


def edge_genes() -> pd.DataFrame:
    return pd.DataFrame([g[:5] for g in EDGE_GENES], columns=["gene_name", "chrom", "start", "end", "strand"]
                        ).assign(gene_id=lambda d: "id_" + d["gene_name"])


def test_windows_by_hand():
    win = af.pp.gene_windows(edge_genes(), chrom_sizes=SIZES)
    for j, (_, chrom, start, end, strand, expected) in enumerate(EDGE_GENES):
        got = win[win["gene"] == j]
        want = [(s, e, w) for x, w in zip(expected, WEIGHTS + WEIGHTS) if x is not None for s, e in [x]]
        assert list(zip(got["start"], got["end"], got["weight"])) == want, EDGE_GENES[j][0]
        assert want == ref_windows(start, end, strand, SIZES[chrom])
        assert set(got["chrom"]) == {chrom}


def write_genome(tmp_path) -> str:
    p = tmp_path / "small.chrom.sizes"
    p.write_text("".join(f"{c}\t{n}\n" for c, n in SIZES.items()))
    return str(p)


def edge_fragments(tmp_path) -> Path:
    """Fragments that touch, straddle or sit one base inside every window boundary."""
    edges = sorted({(c, x) for _, c, *_r, exp in EDGE_GENES for w in exp if w for x in w})
    rows = []
    for k, (c, x) in enumerate(edges):
        for j, (s, e) in enumerate([(x - 1, x), (x, x + 1), (x - 5, x + 5), (x - 300, x), (x, x + 300),
                                    (x - 1, x + 1)]):
            if s >= 0 and e <= SIZES[c]:
                rows.append((c, s, e, f"cell{(k + j) % 7}", 1))
    rows.append(("chr1", 60_000, 60_001, "only_tss", 1))  # one fragment on gene P's TSS base
    rows.append(("chr1", 32_999, 33_000, "only_m_tss", 1))  # gene M's TSS base (end - 1)
    rows.append(("chr1", 100, 199_900, "huge", 1))  # spans nearly the whole chromosome
    df = pd.DataFrame(rows).sort_values([0, 1, 2], kind="stable")
    p = tmp_path / "edges.fragments.tsv.gz"
    with gzip.open(p, "wt") as f:
        df.to_csv(f, sep="\t", header=False, index=False)
    return p


@pytest.mark.parametrize("mode", ["fragment", "insertion"])
def test_edges_equal_loop(tmp_path, mode):
    frag = edge_fragments(tmp_path)
    genes = edge_genes()
    got = af.pp.gene_activity(frag, genes, genome=write_genome(tmp_path), mode=mode, progress=False)
    want = ref_activity_loop(read_fragments(frag), genes, mode=mode, lengths=SIZES)
    assert list(got.var_names) == list(genes["gene_name"])
    G = dense(got)
    for i, bc in enumerate(got.obs_names):
        for j, name in enumerate(got.var_names):
            assert G[i, j] == pytest.approx(want.get((bc, name), 0.0), rel=1e-6, abs=1e-9), (bc, name)
    k = 2 if mode == "insertion" else 1  # a 1-bp fragment's two insertion sites are the same base
    row = dict(zip(got.var_names, G[list(got.obs_names).index("only_tss")]))
    # [60000, 60001): P's first downstream window (1/2) and M's far upstream one [53k, 83k) (1/6)
    assert row == pytest.approx({"P": k / 2, "LONG": 0.0, "M": k / 6, "END": 0.0, "START": 0.0, "LONGM": 0.0,
                                 "C2": 0.0})
    row = dict(zip(got.var_names, G[list(got.obs_names).index("only_m_tss")]))
    # [32999, 33000): M's first downstream window (1/2), P's far upstream [10k, 40k), START's [25k, 55k)
    assert row == pytest.approx({"P": k / 6, "LONG": 0.0, "M": k / 2, "END": 0.0, "START": k / 6, "LONGM": 0.0,
                                 "C2": 0.0})
    if mode == "fragment":  # the huge fragment overlaps every window of every chr1 gene
        huge = G[list(got.obs_names).index("huge")]
        for j, (_, c, s, e, strand, _x) in enumerate(EDGE_GENES):
            assert huge[j] == pytest.approx(sum(w for *_, w in ref_windows(s, e, strand, SIZES[c]))
                                            if c == "chr1" else 0.0)


def test_output_layout(tmp_path):
    frag = edge_fragments(tmp_path)
    genes = pd.concat([edge_genes(), edge_genes().iloc[:1]], ignore_index=True)  # "P" twice
    got = af.pp.gene_activity(frag, genes, genome=write_genome(tmp_path), progress=False)
    assert sp.isspmatrix_csr(got.X) and got.X.dtype == np.float32
    assert list(got.var_names[-2:]) == ["C2", "P-1"] and got.var_names.is_unique
    assert got.var.loc["P", "tss"] == 60_000 and got.var.loc["M", "tss"] == 32_999
    assert list(got.var.columns) == ["gene_id", "chrom", "start", "end", "strand", "tss"]
    ref = read_fragments(frag)
    n = ref.groupby("barcode").size()
    assert got.obs["n_fragments"].to_dict() == n.to_dict()
    u = got.uns["gene_activity"]
    assert u["windows_bp"].tolist() == [[0, 10_000], [10_000, 20_000], [20_000, 50_000]]
    assert np.allclose(u["weights"], WEIGHTS) and u["gene_body"] and u["mode"] == "fragment"


# -- real fragments ----------------------------------------------------------------------
def muon_genes(data_dir) -> pd.DataFrame:
    """The 45 RNA features' coordinates (hg38), with the strand of their GENCODE TSS."""
    with h5py.File(data_dir / MUON / "test_rna_atac.h5mu", "r") as f:
        names = [x.decode() for x in f["mod/rna/var/_index"][:]]
        ids = [x.decode() for x in f["mod/rna/var/gene_ids"][:]]
        iv = [x.decode() for x in f["mod/rna/var/interval"][:]]
    tss = pd.read_csv(data_dir / "genome_annotations/hg38/hg38_gencode_tss_unique.bed.gz", sep="\t", header=None)
    strand = dict(zip(tss[3].str.split(".").str[0], tss[5]))
    chrom = [i.split(":")[0] for i in iv]
    start = [int(i.split(":")[1].split("-")[0]) for i in iv]
    end = [int(i.split("-")[-1]) for i in iv]
    # features missing from the TSS file alternate strands, so both are covered either way
    st = [strand.get(g, "+-"[k % 2]) for k, g in enumerate(ids)]
    return pd.DataFrame({"chrom": chrom, "start": start, "end": end, "strand": st, "gene_name": names,
                         "gene_id": ids})


@pytest.fixture(scope="module")
def muon(data_dir):
    """The muon fragments path, genes, the fragments read by pandas, and our fragment-mode result."""
    frag = data_dir / MUON / "test_rna_atac_fragments.tsv.gz"
    genes = muon_genes(data_dir)
    return frag, genes, read_fragments(frag), af.pp.gene_activity(frag, genes, genome="hg38", progress=False)


@pytest.mark.parametrize("mode", ["fragment", "insertion"])
def test_muon_fragments_equal_brute_force(muon, mode):
    frag, genes, ref, got = muon
    assert {"+", "-"} <= set(genes["strand"]) and (genes["end"] - genes["start"]).max() > 100_000
    if mode == "insertion":
        got = af.pp.gene_activity(frag, genes, genome="hg38", mode=mode, progress=False)
    assert list(got.obs_names) == ref.attrs["barcodes"]
    want = ref_activity(ref, genes, mode=mode)
    assert want.sum() > 10_000  # the windows hold many fragments
    np.testing.assert_allclose(dense(got), want, rtol=1e-6, atol=1e-6)


def test_muon_whitelist_and_min_fragments(muon, data_dir):
    frag, genes, ref, full = muon
    with h5py.File(data_dir / MUON / "test_rna_atac.h5mu", "r") as f:
        cells = [x.decode() for x in f["mod/rna/obs/_index"][:]]
    sub = af.pp.gene_activity(frag, genes, genome="hg38", barcodes=cells, min_fragments=20, progress=False)
    n = ref.groupby("barcode").size().reindex(cells, fill_value=0)
    kept = [c for c in cells if n[c] >= 20]  # whitelist order, then the filter
    assert 100 < len(kept) < len(cells) and list(sub.obs_names) == kept
    np.testing.assert_array_equal(dense(sub), dense(full[kept]))
    assert sub.obs["n_fragments"].tolist() == n[kept].tolist()


def test_gencode_chr22_fragments_equal_brute_force(data_dir):
    gtf = data_dir / "gencode_v33_chr22_gtf/gencode.v33.basic.annotation.chr22.hg38.gtf.gz"
    frag = data_dir / "fragments_macs3_chr22_100cells/test.fragments.tsv.gz"
    genes = gtf_genes(gtf)
    mine = read_genes(gtf, genome="hg38")
    pd.testing.assert_frame_equal(mine, genes, check_dtype=False)
    got = af.pp.gene_activity(frag, gtf, genome="hg38", progress=False)
    ref = read_fragments(frag)
    assert list(got.var["gene_id"]) == list(genes["gene_id"])
    want = ref_activity(ref, genes, lengths=af.get_genome("hg38").chrom_sizes)
    np.testing.assert_allclose(dense(got), want, rtol=1e-6, atol=1e-6)
    long_minus = (genes["strand"] == "-") & (genes["end"] - genes["start"] > 10_000)
    assert long_minus.any() and (want[:, long_minus.to_numpy()] > 0).any()


def test_genes_of_another_chromosome_are_refused(data_dir):
    gtf = data_dir / "gencode_v33_chr22_gtf/gencode.v33.basic.annotation.chr22.hg38.gtf.gz"
    frag = data_dir / MUON / "test_rna_atac_fragments.tsv.gz"  # no chr22 fragment
    with pytest.raises(InputFormatError, match="no fragment lies in the windows of any of the 1,388 genes"):
        af.pp.gene_activity(frag, gtf, genome="hg38", progress=False)


# -- real peak matrix ---------------------------------------------------------------------
def test_scicar_peaks_equal_brute_force(data_dir):
    atac = ad.read_h5ad(data_dir / "scicar2018_a549_multiome/scicar_a549_atac.h5ad")
    atac = atac[::13].copy()  # 204 cells
    bed = data_dir / "genome_annotations/hg19/hg19_genes.archr.bed.gz"
    genes = pd.read_csv(bed, sep="\t", header=None, names=["chrom", "start", "end", "gene_name", "gene_id",
                                                           "strand"], dtype={"gene_id": str}, keep_default_na=False)
    pd.testing.assert_frame_equal(read_genes(bed)[genes.columns.tolist()], genes, check_dtype=False)
    genes = genes.iloc[::40].reset_index(drop=True)  # 582 genes, both strands
    got = af.pp.gene_activity(atac, genes)
    X = np.asarray(atac.X.todense(), dtype=np.float64)
    peaks = atac.var
    want = np.zeros((atac.n_obs, len(genes)))
    for j, g in enumerate(genes.itertuples()):
        on = (peaks["chrom"] == g.chrom).to_numpy()
        ps, pe = peaks["start"].to_numpy(), peaks["end"].to_numpy()
        for ws, we, w in ref_windows(g.start, g.end, g.strand):
            hit = on & (ps < we) & (pe > ws)
            want[:, j] += w * X[:, hit].sum(axis=1)
    assert (want > 0).mean() > 0.02 and want.sum() > 1_000  # a binary, sparse matrix
    np.testing.assert_allclose(dense(got), want, rtol=1e-6, atol=1e-6)
    assert list(got.obs_names) == list(atac.obs_names) and "dex_hours" in got.obs
    assert got.uns["gene_activity"]["mode"] == "peak"


def test_scicar_peak_past_hg19_end_is_refused(data_dir):
    # a real peak of this set ends 51 bp past chr17 in hg19: a mismatch is named, not hidden
    path = data_dir / "scicar2018_a549_multiome/scicar_a549_atac.h5ad"
    bed = data_dir / "genome_annotations/hg19/hg19_genes.archr.bed.gz"
    with pytest.raises(GenomeMismatchError, match="chr17"):
        af.pp.gene_activity(path, bed, genome="hg19")


def test_peaks_and_genes_without_common_chromosome(tmp_path):
    a = ad.AnnData(sp.csr_matrix(np.ones((2, 2), np.float32)), var=pd.DataFrame(index=["chr5:10-20", "chr5:50-90"]))
    with pytest.raises(GenomeMismatchError, match="no chromosome in common"):
        af.pp.gene_activity(a, edge_genes())
    with pytest.raises(ValueError, match="fragments input only"):
        af.pp.gene_activity(a, edge_genes(), mode="insertion")


def test_genes_past_genome_end_are_refused(tmp_path):
    genes = edge_genes()
    genes.loc[0, "end"] = 250_000
    with pytest.raises(GenomeMismatchError, match="past its end"):
        af.pp.gene_activity(edge_fragments(tmp_path), genes, genome=write_genome(tmp_path))


# -- read_genes ---------------------------------------------------------------------------
GTF_LINE = 'chr1\tHAVANA\t{kind}\t{s}\t{e}\t.\t{strand}\t.\tgene_id "{gid}";{extra} gene_type "x";\n'


def write_gtf(path, rows, header="##format: gtf\n"):
    text = header + "".join(GTF_LINE.format(**r) for r in rows)
    with gzip.open(path, "wt") if str(path).endswith(".gz") else open(path, "w") as f:
        f.write(text)
    return path


def test_read_genes_gtf_forms(tmp_path):
    rows = [dict(kind="gene", s=1001, e=2000, strand="+", gid="G1", extra=' gene_name "A";'),
            dict(kind="transcript", s=1001, e=2000, strand="+", gid="G1", extra=' gene_name "A";'),
            dict(kind="gene", s=5001, e=9000, strand="-", gid="G2", extra=' havana_gene_name "no";')]
    g = read_genes(write_gtf(tmp_path / "a.gtf.gz", rows))
    assert g.values.tolist() == [["chr1", 1000, 2000, "+", "A", "G1"], ["chr1", 5000, 9000, "-", "G2", "G2"]]
    # no gene records (UCSC-style): a gene spans its transcripts; Ensembl chromosome names
    tx = [dict(kind="transcript", s=101, e=500, strand="-", gid="T", extra=' gene_name "B";'),
          dict(kind="transcript", s=301, e=900, strand="-", gid="T", extra=' gene_name "B";')]
    p = write_gtf(tmp_path / "b.gtf", tx, header="")
    p.write_text(p.read_text().replace("chr1\t", "1\t"))
    assert read_genes(p).values.tolist() == [["chr1", 100, 900, "-", "B", "T"]]


def test_read_genes_errors(tmp_path):
    ok = dict(kind="gene", s=11, e=20, strand="+", gid="G", extra=' gene_name "A";')
    p = write_gtf(tmp_path / "noname.gtf", [dict(ok, extra="")] * 2)
    with pytest.raises(InputFormatError, match=r"noname.gtf, line 2: the GTF has no gene_name"):
        read_genes(p)
    p = write_gtf(tmp_path / "strand.gtf", [ok, dict(ok, strand=".")])
    with pytest.raises(InputFormatError, match=r"strand.gtf, line 3: strand must be '\+' or '-'.*got '\.'"):
        read_genes(p)
    p = write_gtf(tmp_path / "cols.gtf", [ok, ok])
    p.write_text(p.read_text() + "chr1\tX\tgene\t5\n")
    with pytest.raises(InputFormatError, match=r"cols.gtf, line 4: expected 9 tab-separated columns"):
        read_genes(p)
    p = write_gtf(tmp_path / "coord.gtf", [ok, dict(ok, s="1e3")])
    with pytest.raises(InputFormatError, match=r"coord.gtf, line 3: start is not an integer"):
        read_genes(p)
    p = write_gtf(tmp_path / "chrom.gtf", [ok, ok])
    p.write_text(p.read_text().replace("chr1", "chrZ", 1))
    with pytest.raises(GenomeMismatchError, match=r"chrom.gtf, line 2: chromosome is not in genome hg38.*chrZ"):
        read_genes(p, genome="hg38")
    bed = tmp_path / "genes.bed"
    bed.write_text("chr1\t10\t20\tA\t1\t+\nchr1\t30\t40\tB\t2\t*\n")
    with pytest.raises(InputFormatError, match=r"genes.bed, line 2: strand must be"):
        read_genes(bed)
    bed.write_text("chr1\t10\t20\tA\t+\n")
    with pytest.raises(InputFormatError, match=r"genes.bed, line 1: expected at least 6 tab-separated columns"):
        read_genes(bed)
    bed.write_text("chr1\t10\t20\tA\t1\t+\nchrUn_KI270742v1\t1\t5\tB\t2\t-\n")  # a contig hg38 lacks: dropped
    assert read_genes(bed, genome="hg38")["gene_name"].tolist() == ["A"]


# -- command line -------------------------------------------------------------------------
def test_cli_gene_activity(data_dir, tmp_path, capsys):
    gtf = data_dir / "gencode_v33_chr22_gtf/gencode.v33.basic.annotation.chr22.hg38.gtf.gz"
    frag = data_dir / "fragments_macs3_chr22_100cells/test.fragments.tsv.gz"
    out = tmp_path / "ga.h5ad"
    assert main(["gene-activity", str(frag), "--gtf", str(gtf), "--genome", "hg38", "-o", str(out)]) == 0
    got = ad.read_h5ad(out)
    lib = af.pp.gene_activity(frag, gtf, genome="hg38", progress=False)
    assert got.shape == (100, 1388) and list(got.var_names) == list(lib.var_names)
    np.testing.assert_array_equal(dense(got), dense(lib))
    assert "wrote" in capsys.readouterr().out
    before = out.stat().st_mtime_ns
    assert main(["gene-activity", str(frag), "--gtf", str(gtf), "-o", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and out.stat().st_mtime_ns == before
    assert main(["gene-activity", str(frag), "--gtf", str(gtf), "--mode", "insertion", "-o", str(out),
                 "--overwrite"]) == 0
    assert ad.read_h5ad(out).uns["gene_activity"]["mode"] == "insertion"


def test_cli_bad_gtf_writes_nothing(tmp_path, capsys):
    frag = edge_fragments(tmp_path)
    bad = write_gtf(tmp_path / "bad.gtf.gz", [dict(kind="gene", s=11, e=20, strand="+", gid="G", extra="")])
    out = tmp_path / "out.h5ad"
    assert main(["gene-activity", str(frag), "--gtf", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bad.gtf.gz, line 2: the GTF has no gene_name attribute" in err
    assert list(tmp_path.glob("out*")) == []
