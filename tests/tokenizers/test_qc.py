"""Cell QC in the tokenizer's pass: SnapATAC2 agreement on real fragments, brute force for the
rest, knee calling, the CLI end to end, the plots, and bad inputs."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pandas as pd
import pytest

from atacformer.cli import main
from atacformer.errors import InputFormatError
from atacformer.io.fragments import FragmentReader
from atacformer.preprocessing import call_cells, knee_threshold, qc_metrics, read_tss
from atacformer.tokenizers import tokenize_fragments
from atacformer.vocab import Vocabulary

CHR22 = ("fragments_macs3_chr22_100cells", "test.fragments.tsv.gz")
GTF = ("gencode_v33_chr22_gtf", "gencode.v33.basic.annotation.chr22.hg38.gtf.gz")
PEAKS = ("fragments_macs3_chr22_100cells", "macs3_callpeak_frag_peaks.narrowPeak")


@pytest.fixture(scope="module")
def files(data_dir):
    frag, gtf = data_dir.joinpath(*CHR22), data_dir.joinpath(*GTF)
    if not frag.exists() or not gtf.exists():
        pytest.skip(f"{frag} or {gtf} is absent")
    return frag, gtf


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary.from_bins("hg38", 5000, chroms=["chr22"])


@pytest.fixture(scope="module")
def ours(files, vocab, data_dir):
    frag, gtf = files
    return tokenize_fragments(frag, vocab, tss=gtf, peaks=data_dir.joinpath(*PEAKS), progress=False)


def _gtf_transcripts(gtf) -> pd.DataFrame:
    """Transcript records read with pandas (independently of atacformer's GTF reader)."""
    df = pd.read_csv(gtf, sep="\t", header=None, comment="#", usecols=[0, 2, 3, 4, 6],
                     names=["chrom", "feature", "start", "end", "strand"])
    df = df[df["feature"] == "transcript"]
    return df.assign(start=df["start"] - 1)  # 1-based inclusive -> 0-based half-open


def test_snapatac2_agreement(files, ours, tmp_path, data_dir):
    """n_fragments, duplicate rate, TSS enrichment and the promoter fraction equal SnapATAC2's.

    The tolerance is floating-point rounding only (1e-9): both count the same insertions
    (``start`` and ``end - 1``, no Tn5 shift) against the same distinct transcript starts, and
    SnapATAC2's import keeps unique fragments, its ``frac_dup`` being ``1 - unique / read pairs``
    from the count column, as ours.
    """
    snap = pytest.importorskip("snapatac2")
    from atacformer.genome import get_genome

    frag, gtf = files
    a = snap.pp.import_fragments(str(frag), chrom_sizes={"chr22": get_genome("hg38").chrom_sizes["chr22"]},
                                 min_num_fragments=0, sorted_by_barcode=False, file=None)
    snap.metrics.tsse(a, str(gtf))
    tx = _gtf_transcripts(gtf)
    plus = tx["strand"] == "+"
    tss = np.where(plus, tx["start"], tx["end"] - 1)
    prom = pd.DataFrame({"chrom": tx["chrom"], "start": np.maximum(np.where(plus, tss - 2000, tss - 99), 0),
                         "end": np.where(plus, tss + 100, tss + 2001)})
    bed = tmp_path / "promoters.bed"
    prom.to_csv(bed, sep="\t", header=False, index=False)
    peaks = tmp_path / "peaks.bed"
    pd.read_csv(data_dir.joinpath(*PEAKS), sep="\t", header=None, usecols=[0, 1, 2]).to_csv(
        peaks, sep="\t", header=False, index=False)
    snap.metrics.frip(a, {"frip_promoter": str(bed), "frip_peaks": str(peaks)})
    theirs = a.obs
    mine = ours.obs.reindex(theirs.index)
    assert not mine["n_fragments"].isna().any() and ours.n_cells == a.n_obs
    np.testing.assert_array_equal(mine["n_fragments"].to_numpy(), theirs["n_fragment"].to_numpy())
    np.testing.assert_allclose(mine["duplicate_rate"], theirs["frac_dup"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(mine["tsse"], theirs["tsse"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(mine["frac_promoter"], theirs["frip_promoter"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(mine["frip"], theirs["frip_peaks"], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(ours.uns["qc"]["tss_profile"], np.asarray(a.uns["TSS_profile"]))
    assert ours.uns["qc"]["library_tsse"] == pytest.approx(a.uns["library_tsse"], abs=1e-9)


def _small_file(tmp_path, frag, n=4000):
    """The first n fragments of the real file, with a few lines lacking the count column."""
    df = pd.read_csv(frag, sep="\t", header=None, nrows=n, names=["chrom", "start", "end", "barcode", "count"])
    lines = [f"{c}\t{s}\t{e}\t{b}\t{k}" if i % 7 else f"{c}\t{s}\t{e}\t{b}"
             for i, (c, s, e, b, k) in enumerate(df.itertuples(index=False))]
    p = tmp_path / "small.tsv.gz"
    with gzip.open(p, "wt") as f:
        f.write("\n".join(lines) + "\n")
    df.loc[df.index % 7 == 0, "count"] = 1
    return p, df


def test_brute_force_metrics(files, vocab, tmp_path):
    """Fragment counts, duplicate rate, nucleosome signal, promoter / TSS fractions by plain loops."""
    frag, gtf = files
    p, df = _small_file(tmp_path, frag)
    peak_file = files[0].parent / PEAKS[1]
    cells = tokenize_fragments(p, vocab, tss=gtf, peaks=peak_file, progress=False)
    pk = pd.read_csv(peak_file, sep="\t", header=None, usecols=[1, 2]).to_numpy()
    tx = _gtf_transcripts(gtf)
    plus = (tx["strand"] == "+").to_numpy()
    tss = np.where(plus, tx["start"], tx["end"] - 1)
    prom_s, prom_e = np.where(plus, tss - 2000, tss - 99), np.where(plus, tss + 100, tss + 2001)
    want = {}
    for c, s, e, b, k in df.itertuples(index=False):
        r = want.setdefault(b, dict(n=0, reads=0, nfr=0, mono=0, prom=0, tss=0, peak=0))
        r["peak"] += bool(((pk[:, 0] < e) & (s < pk[:, 1])).any())
        r["n"] += 1
        r["reads"] += k
        length = e - s
        r["nfr"] += length < 147
        r["mono"] += 147 <= length <= 294
        r["prom"] += bool(((prom_s < e) & (s < prom_e)).any())
        r["tss"] += bool((np.abs(tss - s) <= 2000).any() or (np.abs(tss - (e - 1)) <= 2000).any())
    obs = cells.obs
    assert sorted(obs.index) == sorted(want)
    for b, r in want.items():
        o = obs.loc[b]
        assert o["n_fragments"] == r["n"]
        assert o["duplicate_rate"] == pytest.approx(1 - r["n"] / r["reads"])
        if r["nfr"]:
            assert o["nucleosome_signal"] == pytest.approx(r["mono"] / r["nfr"])
        else:
            assert np.isnan(o["nucleosome_signal"])
        assert o["frac_promoter"] == pytest.approx(r["prom"] / r["n"])
        assert o["frac_tss"] == pytest.approx(r["tss"] / r["n"])
        assert o["frip"] == pytest.approx(r["peak"] / r["n"])
    # qc_metrics (no tokenization) gives the same numbers, and the length histogram is exact
    alone, lib = qc_metrics(p, gtf, peaks=peak_file, progress=False)
    pd.testing.assert_frame_equal(alone.loc[obs.index].reset_index(drop=True),
                                  obs[alone.columns].reset_index(drop=True), check_dtype=False)
    hist = np.bincount(np.minimum(df["end"] - df["start"], 1000), minlength=1001)
    np.testing.assert_array_equal(lib["fragment_lengths"], hist)


def test_count_column_parsed(tmp_path):
    p = tmp_path / "f.tsv"
    p.write_text("chr1\t10\t20\tA\t3\nchr1\t15\t30\tB\nchr1\t40\t50\tA\t12\textra\n")
    [fb] = list(FragmentReader(p, counts=True))
    assert fb.counts.tolist() == [3, 1, 12]
    [fb] = list(FragmentReader(p))
    assert fb.counts is None


def test_knee_on_synthetic_knee():
    rng = np.random.default_rng(0)
    cells = rng.lognormal(np.log(4000), 0.4, 800).astype(int)
    empty = rng.lognormal(np.log(30), 0.6, 40000).astype(int) + 1
    n = np.r_[cells, empty]
    k = knee_threshold(n)
    # the cut lies in the gap between the two populations: (almost) all cells kept, no background
    assert np.percentile(empty, 99.9) < k < np.percentile(cells, 1)
    keep = call_cells(pd.DataFrame({"n_fragments": n}), knee=True)
    assert keep[:800].mean() > 0.99 and keep[800:].mean() < 0.001
    obs = pd.DataFrame({"n_fragments": [5000, 5000, 20], "tsse": [9.0, 2.0, 9.0]})
    assert call_cells(obs, min_fragments=100, min_tsse=4).tolist() == [True, False, False]


def test_cli_qc_end_to_end(files, tmp_path):
    import anndata as ad

    frag, gtf = files
    out, plots = tmp_path / "cells.h5ad", tmp_path / "plots"
    plots.mkdir()
    rc = main(["tokenize", str(frag), "--genome", "hg38", "--bins", "5000", "--tss", str(gtf), "--min-tsse", "3",
               "--min-fragments", "200", "--qc-plots", str(plots), "-o", str(out)])
    assert rc == 0
    a = ad.read_h5ad(out)
    for col in ("n_fragments", "tsse", "frac_promoter", "nucleosome_signal", "duplicate_rate"):
        assert col in a.obs and a.obs[col].notna().all(), col
    assert (a.obs["tsse"] >= 3).all() and (a.obs["n_fragments"] >= 200).all()
    alone, _ = qc_metrics(frag, gtf, progress=False)
    passing = alone[(alone["tsse"] >= 3) & (alone["n_fragments"] >= 200)]
    assert sorted(a.obs_names) == sorted(passing.index)
    for name in ("knee", "fragment_lengths", "tss_profile"):
        png = plots / f"test_{name}.png"
        assert png.exists() and png.stat().st_size > 1000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_cli_doublets_are_scanpy_scrublet(files, tmp_path):
    """--doublets writes scanpy.pp.scrublet's scores of the tokenized cells."""
    import anndata as ad
    import scanpy as sc

    frag, gtf = files
    out = tmp_path / "cells.h5ad"
    assert main(["tokenize", str(frag), "--genome", "hg38", "--qc", "--doublets", "-o", str(out)]) == 0
    a = ad.read_h5ad(out)
    ref = ad.AnnData(X=a.X.astype(np.float32))
    sc.pp.scrublet(ref, threshold=0.25, random_state=0)
    np.testing.assert_allclose(a.obs["doublet_score"].to_numpy(), ref.obs["doublet_score"].to_numpy(), rtol=1e-6)
    assert ((a.obs["doublet_score"] >= 0) & (a.obs["doublet_score"] <= 1)).all()


def _assert_fails(args, tmp_path, capsys, *words):
    out = tmp_path / "o" / "cells.h5ad"
    out.parent.mkdir(exist_ok=True)
    assert main([*args, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, err
    assert os.listdir(out.parent) == []


def test_bad_tss_inputs(files, tmp_path, capsys):
    frag, gtf = files
    base = ["tokenize", str(frag), "--genome", "hg38"]
    # a TSS BED with no chromosome of the fragments
    bed = tmp_path / "tss_chr1.bed"
    bed.write_text("chr1\t1000\t1001\tg1\t0\t+\nchr1\t5000\t5001\tg2\t0\t-\n")
    _assert_fails([*base, "--tss", str(bed)], tmp_path, capsys, "tss_chr1.bed", "no TSS lies on a chromosome")
    _assert_fails([*base, "--peaks", str(bed)], tmp_path, capsys, "tss_chr1.bed", "no peak lies on a chromosome")
    # a GTF without transcript records
    genes_only = tmp_path / "genes.gtf"
    genes_only.write_text('chr22\tHAVANA\tgene\t100\t2000\t.\t+\t.\tgene_id "G1"; gene_name "A";\n')
    _assert_fails([*base, "--tss", str(genes_only)], tmp_path, capsys, "genes.gtf", "no TSS found")
    # --min-tsse without --tss; a missing TSS file
    _assert_fails([*base, "--min-tsse", "4"], tmp_path, capsys, "--min-tsse needs --tss")
    _assert_fails([*base, "--tss", str(tmp_path / "nope.gtf")], tmp_path, capsys, "nope.gtf", "no such file")
    # a bad strand in a TSS BED
    bad = tmp_path / "bad_strand.bed"
    bad.write_text("chr22\t1000\t1001\tg1\t0\tx\n")
    with pytest.raises(InputFormatError, match="strand"):
        read_tss(bad)


def test_bad_count_column(tmp_path, vocab, capsys):
    p = tmp_path / "f.tsv.gz"
    with gzip.open(p, "wt") as f:
        f.write("chr22\t20000000\t20000100\tA\t1\nchr22\t20000200\t20000300\tA\tmany\n")
    with pytest.raises(InputFormatError, match=r"line 2.*duplicate count.*'many'"):
        tokenize_fragments(p, vocab, qc=True, progress=False)
    # without QC the fifth column is not read, as before
    assert tokenize_fragments(p, vocab, progress=False).n_cells == 1
    _assert_fails(["tokenize", str(p), "--genome", "hg38", "--qc"], tmp_path, capsys, "line 2", "'many'")
