"""HOMER-style region classes and TSS distances against per-region brute force on the
GENCODE v33 chr22 annotation."""

from __future__ import annotations

import gzip

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atacformer.errors import InputFormatError
from atacformer.vocab import Vocabulary
from atacformer.vocab.annotate import HOMER_CLASSES, annotate_gtf, annotate_regions

GTF = "gencode_v33_chr22_gtf/gencode.v33.basic.annotation.chr22.hg38.gtf.gz"


def _parse_gtf(path):
    """The GTF read line by line with the standard library (an independent reader)."""
    rows = []
    with gzip.open(path, "rt") as f:
        for line in f:
            if line.startswith("#"):
                continue
            c = line.rstrip("\n").split("\t")
            attrs = dict(kv.strip().split(" ", 1) for kv in c[8].strip().rstrip(";").split(";") if kv.strip())
            attrs = {k: v.strip('"') for k, v in attrs.items()}
            rows.append((c[0], int(c[3]) - 1, int(c[4]), c[6], c[2], attrs.get("gene_name"),
                         attrs.get("gene_type"), attrs.get("transcript_id")))
    return pd.DataFrame(rows, columns=["chrom", "start", "end", "strand", "feature", "gene_name", "gene_type",
                                       "transcript_id"])


@pytest.fixture(scope="module")
def gtf(data_dir):
    return data_dir / GTF


@pytest.fixture(scope="module")
def regions(gtf):
    """Random 500 bp windows on chr22 plus regions on both ends of transcripts (edges of every
    window and feature), for the brute force."""
    rec = _parse_gtf(gtf)
    tx = rec[rec.feature == "transcript"]
    rng = np.random.default_rng(0)
    s = rng.integers(15_000_000, 50_000_000, 300)
    starts = [s]
    ends = [s + rng.integers(50, 1500, 300)]
    pick = tx.sample(120, random_state=1)
    for col, off in (("start", -1), ("start", 0), ("end", -1), ("end", 0)):
        p = pick[col].to_numpy() + off
        starts.append(p - 40)
        ends.append(p + 1)
    st = np.concatenate(starts)
    en = np.concatenate(ends)
    return pd.DataFrame({"chrom": "chr22", "start": st, "end": en}), rec


def _brute(regions: pd.DataFrame, rec: pd.DataFrame):
    tx = rec[rec.feature == "transcript"].reset_index(drop=True)
    cds = rec[rec.feature == "CDS"]
    utr = rec[rec.feature == "UTR"].copy()
    lo = cds.groupby("transcript_id")["start"].min()
    hi = cds.groupby("transcript_id")["end"].max()
    side = []
    for r in utr.itertuples():
        if r.strand == "+":
            side.append("5' UTR" if r.end <= lo.get(r.transcript_id, np.inf) else "3' UTR")
        else:
            side.append("5' UTR" if r.start >= hi.get(r.transcript_id, -np.inf) else "3' UTR")
    utr["side"] = side
    sets = []
    tss = np.where(tx.strand == "+", tx.start, tx.end - 1)
    tes = np.where(tx.strand == "+", tx.end - 1, tx.start)
    plus = (tx.strand == "+").to_numpy()
    sets.append((np.where(plus, tss - 1000, tss - 100), np.where(plus, tss + 101, tss + 1001), tx.gene_type))
    sets.append((np.where(plus, tes - 100, tes - 1000), np.where(plus, tes + 1001, tes + 101), tx.gene_type))
    for name in ("5' UTR", "3' UTR"):
        u = utr[utr.side == name]
        sets.append((u.start.to_numpy(), u.end.to_numpy(), u.gene_type))
    ex = rec[rec.feature == "exon"]
    sets.append((ex.start.to_numpy(), ex.end.to_numpy(), ex.gene_type))
    sets.append((tx.start.to_numpy(), tx.end.to_numpy(), tx.gene_type))
    classes, noncoding, dists, genes = [], [], [], []
    for s, e in zip(regions.start, regions.end):
        cls, nc = "intergenic", False
        for k, (a, b, gt) in enumerate(sets):
            hit = (np.maximum(a, s) < np.minimum(b, e))
            if hit.any():
                cls = HOMER_CLASSES[k]
                nc = not (np.asarray(gt)[hit] == "protein_coding").any()
                break
        classes.append(cls)
        noncoding.append(nc)
        best = None
        for i in np.argsort(tss, kind="stable"):
            t = tss[i]
            d = 0 if s <= t < e else (s - t if t < s else t - (e - 1))
            if best is None or d < best[0]:
                best = (d, i)
        d, i = best
        upstream = (e - 1 < tss[i]) if tx.strand[i] == "+" else (s > tss[i])
        dists.append(-d if (upstream and d) else d)
        genes.append(tx.gene_name[i])
    return classes, noncoding, dists, genes


def test_classes_and_tss_distance_equal_brute_force(regions, gtf):
    df, rec = regions
    ann = annotate_gtf(df, gtf)
    classes, noncoding, dists, genes = _brute(df, rec)
    assert ann["region_class"].astype(str).tolist() == classes
    np.testing.assert_array_equal(ann["noncoding"].to_numpy(), noncoding)
    np.testing.assert_array_equal(ann["tss_distance"].to_numpy(), np.asarray(dists, float))
    assert ann["nearest_gene"].tolist() == genes
    seen = set(classes)
    assert {"promoter-TSS", "TTS", "exon", "intron", "intergenic"} <= seen
    d = np.asarray(dists)
    assert (d < 0).any() and (d > 0).any() and (d == 0).any()


def test_both_strands_and_edges(gtf):
    """A + and a - transcript, by hand: upstream is negative on each strand."""
    rec = _parse_gtf(gtf)
    tx = rec[rec.feature == "transcript"]
    p = tx[tx.strand == "+"].iloc[0]
    m = tx[tx.strand == "-"].iloc[0]
    df = pd.DataFrame({"chrom": "chr22",
                       "start": [p.start - 5000, p.start, m.end - 1, m.end + 4000],
                       "end": [p.start - 4990, p.start + 1, m.end, m.end + 4010]})
    ann = annotate_gtf(df, gtf)
    d = ann["tss_distance"].to_numpy()
    assert d[1] == 0 and d[2] == 0
    assert d[0] < 0 or ann["nearest_gene"].iat[0] != p.gene_name  # upstream of a + TSS (unless another is nearer)
    assert ann["region_class"].iat[1] == "promoter-TSS" and ann["region_class"].iat[2] == "promoter-TSS"


def test_anndata_vocabulary_and_masked_bin_classes(gtf):
    v = Vocabulary.from_bins("hg38", 5000, chroms=["chr22"])
    a = ad.AnnData(sp.csr_matrix((3, v.n_regions), dtype=np.float32),
                   var=pd.DataFrame({"chrom": v.chroms, "start": v.starts, "end": v.ends},
                                    index=[f"chr22:{s}-{e}" for s, e in zip(v.starts, v.ends)]))
    from atacformer import tl

    tl.annotate_regions(a, gtf=gtf)
    direct = annotate_gtf(v, gtf)
    assert (a.var["region_class"].astype(str).to_numpy() == direct["region_class"].astype(str).to_numpy()).all()
    np.testing.assert_array_equal(a.var["tss_distance"].to_numpy(), direct["tss_distance"].to_numpy())
    # names only (no chrom/start/end columns) give the same
    b = ad.AnnData(sp.csr_matrix((3, v.n_regions), dtype=np.float32), var=pd.DataFrame(index=a.var_names))
    tl.annotate_regions(b, gtf=gtf)
    np.testing.assert_array_equal(b.var["nearest_gene"].to_numpy(), a.var["nearest_gene"].to_numpy())
    # the masked-bin model's eos-per-class reads the same classes
    codes, names = annotate_regions(v, genes=str(gtf))
    assert names == list(HOMER_CLASSES)
    np.testing.assert_array_equal(codes, direct["region_class"].cat.codes.to_numpy())


def test_bad_gtf(tmp_path, gtf):
    v = Vocabulary.from_bins("hg38", 5000, chroms=["chr1"])
    with pytest.raises(InputFormatError, match="no transcript on the regions' chromosomes"):
        annotate_gtf(v, gtf)
    genes_only = tmp_path / "genes.gtf"
    genes_only.write_text('chr22\tX\tgene\t100\t200\t.\t+\t.\tgene_id "g1"; gene_name "A";\n')
    with pytest.raises(InputFormatError, match="no transcript"):
        annotate_gtf(Vocabulary.from_bins("hg38", 5000, chroms=["chr22"]), genes_only)
