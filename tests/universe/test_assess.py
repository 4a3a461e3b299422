"""Universe assessment (atacformer.vocab.universe.assess) against geniml's own functions.

geniml (Rymuza 2024) is the independent reference: its ``assess`` functions are called on
the same universe and files. It shells out to ``sort`` and ``bedtools merge``; where
bedtools is not installed a small stand-in for ``bedtools merge`` (merge sorted, overlapping
or touching intervals) is put on PATH for these tests.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from atacformer.errors import AtacformerError, GenomeMismatchError, InputFormatError, OutputError
from atacformer.genome import Genome
from atacformer.io.bed import read_bed
from atacformer.vocab.universe import assess as A
from atacformer.vocab.universe import methods
from atacformer.vocab.universe.coverage import CoverageTracks
from atacformer.vocab.universe.methods import lh_model

ENCODE = "bulk_peaks_encode_roadmap_hg38"
BEDBASE = f"{ENCODE}/geniml_bedbase_samples_hg38"
# two 10 Mb windows of hg38 (chrom: (from, to)), small enough for geniml's per-base arrays,
# moved to start at 0 (a genome of two 10 Mb chromosomes); regions crossing a window's edge
# are cut there. Every set has regions in both (the IDR set two on each).
WINDOWS = {"chr19": (28_000_000, 38_000_000), "chr22": (30_000_000, 40_000_000)}
OVERLAP = ["universe_only_bp", "file_only_bp", "both_bp"]

_MERGE_SHIM = """#!{python} -S
import sys
if sys.argv[1:] != ["merge"]:
    sys.exit("test stand-in: only 'bedtools merge' (stdin, sorted input)")
cur = None
for line in sys.stdin:
    f = line.rstrip("\\n").split("\\t")
    if len(f) < 3 or f[0].startswith(("#", "track", "browser")):
        continue
    c, s, e = f[0], int(f[1]), int(f[2])
    if cur and cur[0] == c and s <= cur[2]:
        cur[2] = max(cur[2], e)
        continue
    if cur:
        sys.stdout.write("%s\\t%d\\t%d\\n" % tuple(cur))
    cur = [c, s, e]
if cur:
    sys.stdout.write("%s\\t%d\\t%d\\n" % tuple(cur))
"""


@pytest.fixture(scope="module")
def geniml_env(tmp_path_factory):
    """geniml (the reference; skip without it) and the ``bedtools merge`` its assess needs on
    PATH: the real one, or a stand-in."""
    pytest.importorskip("geniml")
    old = os.environ["PATH"]
    if shutil.which("bedtools") is None:
        d = tmp_path_factory.mktemp("bin")
        shim = d / "bedtools"
        shim.write_text(_MERGE_SHIM.format(python=sys.executable))
        shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
        os.environ["PATH"] = f"{d}{os.pathsep}{old}"
    yield
    os.environ["PATH"] = old


def _quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _geniml_reference(folder, names, universe_path, flexible, model=None, cov_folder=None):
    """Every assess figure from geniml's own functions."""
    from geniml.assess.assess import get_f_10_score_from_assessment_file, get_rbs_from_assessment_file
    from geniml.assess.distance import run_distance
    from geniml.assess.intersection import run_intersection
    from geniml.assess.likelihood import hard_universe_likelihood, likelihood_flexible_universe

    flist = os.path.join(folder, "files.txt")
    with open(flist, "w") as f:
        f.write("\n".join(names) + "\n")
    ov = _quiet(run_intersection, folder, flist, universe_path, 1)
    ov.columns = ["file", "univers/file", "file/universe", "universe&file"]
    df = ov
    for flex in (False, True) if flexible else (False,):
        for utf in (False, True):
            r = _quiet(run_distance, folder, flist, universe_path, 1, flexible=flex, uni_to_file=utf)
            r.columns = ["file", f"median_dist_{'universe_to_file' if utf else 'file_to_universe'}"
                                 f"{'_flex' if flex else ''}"]
            df = df.merge(r, on="file")
    csv = os.path.join(folder, "geniml_assessment.csv")
    df.to_csv(csv, index=False)  # the file geniml's assess CLI writes
    out = {"table": df.set_index("file").loc[names].reset_index(),
           "f10": np.asarray(get_f_10_score_from_assessment_file(csv, f10_each_file=True), float),
           "rbs": get_rbs_from_assessment_file(csv, cs_each_file=True)["RBS"].to_numpy(float)}
    if flexible:
        out["rbs_flex"] = get_rbs_from_assessment_file(csv, cs_each_file=True, flexible=True)["RBS"].to_numpy(float)
    if model is not None:
        out["likelihood"] = _quiet(hard_universe_likelihood, model, universe_path, cov_folder, "all")
        if flexible:
            out["likelihood_flexible"] = _quiet(likelihood_flexible_universe, model, universe_path, cov_folder,
                                                "all")
    return out


def _universes(cov):
    return {"cc": methods.cc(cov, 2), "hmm": methods.hmm(cov), "union": methods.union(cov)}


@pytest.fixture(scope="module")
def encode(data_dir, tmp_path_factory, geniml_env):
    """The five ENCODE / Roadmap hg38 region sets on two windows (WINDOWS), three universes, and
    geniml's figures for each (likelihood from geniml's model of the bigWig tracks)."""
    from geniml.likelihood.build_model import ModelLH

    src = data_dir / ENCODE
    files = sorted(p for p in src.iterdir() if p.name.endswith(".gz"))
    if not files:
        pytest.skip(f"{src} has no region sets")
    d = tmp_path_factory.mktemp("encode")
    g = Genome("hg38_windows", {c: b - a for c, (a, b) in WINDOWS.items()})
    names = []
    for p in files:
        df = read_bed(p)
        df = df[df["chrom"].isin(list(WINDOWS))].copy()
        lo = df["chrom"].map({c: a for c, (a, _) in WINDOWS.items()})
        hi = df["chrom"].map({c: b for c, (_, b) in WINDOWS.items()})
        df["start"] = np.maximum(df["start"], lo) - lo
        df["end"] = np.minimum(df["end"], hi) - lo
        df = df[df["start"] < df["end"]]
        name = p.name.split(".gz")[0] + ".bed"
        df.to_csv(d / name, sep="\t", header=False, index=False)
        names.append(name)
    paths = [str(d / n) for n in names]
    cov = CoverageTracks.from_beds(paths, g, progress=False)
    cov.write_bigwig(d / "cov")
    model = str(d / "model.tar")
    _quiet(ModelLH(model).make, str(d / "cov"), "all", cov.n_files)
    out = {"dir": d, "names": names, "paths": paths, "genome": g, "cov": cov, "universes": {}, "geniml": {}}
    for key, u in _universes(cov).items():
        up = str(d / f"universe_{key}.bed")
        u.write(up)
        out["universes"][key] = (u, up)
        out["geniml"][key] = _geniml_reference(str(d), names, up, "core_start" in u.regions, model, str(d / "cov"))
    return out


@pytest.fixture(scope="module")
def bedbase(data_dir, geniml_env):
    """geniml's own hg38 test samples (chr1, 50 peaks each); overlap and distances only
    (geniml's likelihood would read all of hg38 per base)."""
    src = data_dir / BEDBASE
    names = sorted(p.name for p in src.glob("*.bed"))
    if not names:
        pytest.skip(f"{src} has no BED files")
    paths = [str(src / n) for n in names]
    cov = CoverageTracks.from_beds(paths, "hg38", progress=False)
    return {"dir": src, "names": names, "paths": paths, "cov": cov, "universes": _universes(cov)}


@pytest.fixture(scope="module")
def bedbase_geniml(bedbase, tmp_path_factory):
    d = tmp_path_factory.mktemp("bedbase")
    for n in bedbase["names"]:
        shutil.copy(bedbase["dir"] / n, d / n)
    out = {}
    for key, u in bedbase["universes"].items():
        up = str(d / f"universe_{key}.bed")
        u.write(up)
        out[key] = (up, _geniml_reference(str(d), bedbase["names"], up, "core_start" in u.regions))
    return out


def _compare(table, ref, flexible):
    """Max abs difference per metric (all must be 0 or round-off)."""
    t = ref["table"]
    diffs = {}
    for mine, theirs in zip(OVERLAP, ["univers/file", "file/universe", "universe&file"]):
        diffs[mine] = np.abs(table[mine].to_numpy(float) - t[theirs].to_numpy(float)).max()
    cols = ["median_dist_file_to_universe", "median_dist_universe_to_file"]
    if flexible:
        cols += ["median_dist_file_to_universe_flex", "median_dist_universe_to_file_flex"]
    for c in cols:
        a, b = table[c].to_numpy(float), t[c].to_numpy(float)
        assert np.array_equal(np.isnan(a), np.isnan(b)), c
        diffs[c] = np.nanmax(np.abs(a - b), initial=0)
    for c in ("f10", "rbs") + (("rbs_flex",) if flexible else ()):
        a, b = table[c].to_numpy(float), ref[c]
        assert np.array_equal(np.isnan(a), np.isnan(b)), c
        diffs[c] = np.nanmax(np.abs(a - b), initial=0)
    return diffs


@pytest.mark.parametrize("key", ["cc", "hmm", "union"])
def test_encode_equals_geniml(encode, key):
    u, up = encode["universes"][key]
    ref = encode["geniml"][key]
    flexible = "core_start" in u.regions
    table = A.assess(up, encode["paths"], coverage=encode["cov"], progress=False, geniml_quirks=True)
    assert table["file"].tolist() == encode["paths"]
    diffs = _compare(table, ref, flexible)
    for c in OVERLAP + [c for c in diffs if c.startswith("median")]:
        assert diffs[c] == 0, (c, diffs)
    for c in ("f10", "rbs", "rbs_flex"):
        if c in diffs:
            assert diffs[c] < 1e-12, (c, diffs)
    assert table.attrs["likelihood"] == pytest.approx(ref["likelihood"], rel=1e-12)
    if flexible:
        assert table.attrs["likelihood_flexible"] == pytest.approx(ref["likelihood_flexible"], rel=1e-12)
    # the same from the Universe object, with the coverage built from the files
    again = A.assess(u, encode["paths"], progress=False, geniml_quirks=True)
    pd.testing.assert_frame_equal(again.drop(columns="file"), table.drop(columns="file"))
    assert again.attrs["likelihood"] == pytest.approx(table.attrs["likelihood"], rel=1e-13)


@pytest.mark.parametrize("key", ["cc", "hmm", "union"])
def test_bedbase_equals_geniml(bedbase, bedbase_geniml, key):
    up, ref = bedbase_geniml[key]
    u = bedbase["universes"][key]
    table = A.assess(u, bedbase["paths"], genome="hg38", likelihood=False, progress=False, geniml_quirks=True)
    diffs = _compare(table, ref, "core_start" in u.regions)
    assert max(diffs.values()) < 1e-12, diffs


def test_summary_and_precision_recall(encode):
    from geniml.assess.assess import get_f_10_score  # encode needs geniml_env

    u, up = encode["universes"]["cc"]
    table = A.assess(up, encode["paths"], coverage=encode["cov"], progress=False, geniml_quirks=True)
    t = encode["geniml"]["cc"]["table"]
    both, u_only, f_only = (t[c].to_numpy(float) for c in ("universe&file", "univers/file", "file/universe"))
    np.testing.assert_allclose(table["precision"], both / (both + u_only), rtol=1e-15)
    np.testing.assert_allclose(table["recall"], both / (both + f_only), rtol=1e-15)
    s = A.summary(table)
    flist = encode["dir"] / "files.txt"
    f10 = _quiet(get_f_10_score, str(encode["dir"]), str(flist), up, 1)
    assert s["f10"] == pytest.approx(f10, rel=1e-12)
    assert s["rbs"] == pytest.approx(np.nanmean(encode["geniml"]["cc"]["rbs"]), rel=1e-12)
    assert s["likelihood"] == table.attrs["likelihood"] and s["n_files"] == len(encode["paths"])
    assert s["precision"] == pytest.approx(table["precision"].mean())


def test_quirks_change_real_figures(encode):
    """geniml's streaming artefacts move real numbers: the IDR set (2 peaks on chr19, 3 on
    chr22) gets distances on chr22 only; corrected, chr19 counts too."""
    u, up = encode["universes"]["hmm"]
    a = A.assess(up, encode["paths"], coverage=encode["cov"], progress=False, geniml_quirks=True)
    b = A.assess(up, encode["paths"], coverage=encode["cov"], progress=False, geniml_quirks=False)
    pd.testing.assert_frame_equal(a[OVERLAP], b[OVERLAP])
    assert not np.allclose(a["median_dist_universe_to_file"], b["median_dist_universe_to_file"])
    assert a.attrs["likelihood_flexible"] != pytest.approx(b.attrs["likelihood_flexible"], rel=1e-6)


# -- synthetic: brute force ----------------------------------------------------------------
def _random_case(seed, n_chroms=3, L=4000, flexible=True, n_files=3):
    rng = np.random.default_rng(seed)
    chroms = [f"chr{i}" for i in range(1, n_chroms + 1)]
    g = Genome("toy", {c: L for c in chroms})
    urows = []
    for c in chroms[: rng.integers(1, n_chroms + 1)]:
        cuts = np.sort(rng.choice(np.arange(1, L // 10), size=2 * rng.integers(1, 8), replace=False)) * 10
        for s, e in cuts.reshape(-1, 2):
            cs = int(rng.integers(s + 1, e - 1))
            urows.append((c, int(s), int(e), cs, int(rng.integers(cs, e))))
    udf = pd.DataFrame(urows, columns=["chrom", "start", "end", "core_start", "core_end"])
    if not flexible:
        udf = udf[["chrom", "start", "end"]]
    frames = []
    for _ in range(n_files):
        rows = []
        for c in rng.choice(chroms, size=rng.integers(1, n_chroms + 1), replace=False):
            for _ in range(rng.integers(1, 12)):
                s = int(rng.integers(0, L - 300))
                rows.append((c, s, s + int(rng.integers(1, 300))))
        frames.append(pd.DataFrame(rows, columns=["chrom", "start", "end"]))
    return g, udf, frames


def _write(frames, folder):
    paths = []
    for i, df in enumerate(frames):
        p = folder / f"set{i}.bed"
        df.to_csv(p, sep="\t", header=False, index=False)
        paths.append(str(p))
    return paths


@pytest.mark.parametrize("seed", range(4))
def test_precision_recall_brute_force(tmp_path, seed):
    g, udf, frames = _random_case(seed, flexible=False)
    paths = _write(frames, tmp_path)
    table = A.assess(udf, paths, genome=g, likelihood=False, progress=False, geniml_quirks=True)
    for (_, row), df in zip(table.iterrows(), frames):
        both = only_u = only_f = 0
        for c, L in g.chrom_sizes.items():
            U = np.zeros(L, bool)
            F = np.zeros(L, bool)
            for s, e in udf.loc[udf.chrom == c, ["start", "end"]].to_numpy():
                U[s:e] = True
            for s, e in df.loc[df.chrom == c, ["start", "end"]].to_numpy():
                F[s:e] = True
            both += int((U & F).sum())
            only_u += int((U & ~F).sum())
            only_f += int((F & ~U).sum())
        assert (row["both_bp"], row["universe_only_bp"], row["file_only_bp"]) == (both, only_u, only_f)
        assert row["precision"] == both / (both + only_u)
        assert row["recall"] == both / (both + only_f)
        p, r = both / (both + only_u), both / (both + only_f)
        expect = 101 * p * r / (100 * p + r) if p + r else np.nan
        np.testing.assert_allclose(row["f10"], expect, rtol=1e-15)


def _brute_median(q, t):
    """Median of pooled start / end distances, every query against every target."""
    out = []
    for side in (0, 1):
        for c in set(q) & set(t):
            qa, qb = q[c][side]
            ta, tb = t[c][side]
            d = np.maximum(np.maximum(ta[None] - qb[:, None], qa[:, None] - tb[None]), 0).min(1)
            out.append(d)
    return float(np.median(np.concatenate(out))) if out else np.nan


@pytest.mark.parametrize("seed", range(4))
def test_corrected_definitions_brute_force(tmp_path, seed):
    """``geniml_quirks=False``: true nearest distances on every shared chromosome, and the
    likelihood as a per-base sum with dense arrays."""
    from atacformer.vocab.universe.coverage import merge_intervals

    g, udf, frames = _random_case(seed)
    paths = _write(frames, tmp_path)
    cov = CoverageTracks.from_regions(frames, g, progress=False)
    table = A.assess(udf, paths, coverage=cov, geniml_quirks=False, progress=False)

    def sides(df, flex_universe):
        out = {}
        for c, sub in df.groupby("chrom"):
            s, e = sub["start"].to_numpy(), sub["end"].to_numpy()
            if flex_universe:
                cs, ce = sub["core_start"].to_numpy(), sub["core_end"].to_numpy()
                out[c] = ((s, cs), (ce, e))
            else:
                out[c] = ((s, s), (e, e))
        return out

    for (_, row), df in zip(table.iterrows(), frames):
        merged = []
        for c, sub in df.groupby("chrom"):
            ms, me = merge_intervals(sub["start"].to_numpy(np.int64), sub["end"].to_numpy(np.int64))
            merged.append(pd.DataFrame({"chrom": c, "start": ms, "end": me}))
        f = sides(pd.concat(merged), False)
        for flex, sfx in ((False, ""), (True, "_flex")):
            u = sides(udf, flex)
            np.testing.assert_equal(row[f"median_dist_file_to_universe{sfx}"], _brute_median(f, u))
            np.testing.assert_equal(row[f"median_dist_universe_to_file{sfx}"], _brute_median(u, f))

    # likelihood, base by base
    dense = {}
    for c in g.chroms:
        for k in ("start", "core", "end"):
            t = cov.track(k, c)
            m = lh_model(t, cov.n_files)
            dense[k, c] = m[t.dense()]
    hard = flex = 0.0
    for c in g.chroms:
        sub = udf[udf.chrom == c]
        L = g.chrom_sizes[c]
        sel = {k: np.zeros(L, bool) for k in ("start", "core", "end")}
        for s, e in sub[["start", "end"]].to_numpy():
            sel["start"][s] = sel["end"][e - 1] = True
            sel["core"][s:e] = True
        for k in sel:
            hard += np.where(sel[k], dense[k, c][:, 1], dense[k, c][:, 0]).sum()
        st, co, en = dense["start", c], dense["core", c], dense["end", c]
        bg = np.ones(L, bool)
        for s, e, cs, ce in sub[["start", "end", "core_start", "core_end"]].to_numpy():
            bg[s:e] = False
            flex += co[cs:ce, 1].sum() + st[cs:ce, 0].sum() + en[cs:ce, 0].sum()
            for a, b, proc, out, rev in ((s, cs, st, en, False), (ce, e, en, st, True)):
                n = b - a
                w = np.linspace(1 / n, 1, n)[::-1 if rev else 1]
                flex += (np.sum(proc[a:b, 1]) / n + np.sum(w * co[a:b, 1]) + (1 - 1 / n) * np.sum(proc[a:b, 0])
                         + np.sum((1 - w) * co[a:b, 0]) + np.sum(out[a:b, 0]))
        flex += (st[bg, 0].sum() + co[bg, 0].sum() + en[bg, 0].sum())
    assert table.attrs["likelihood"] == pytest.approx(hard, rel=1e-12)
    assert table.attrs["likelihood_flexible"] == pytest.approx(flex, rel=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_random_multichromosome_equals_geniml(tmp_path, geniml_env, seed):
    """Few regions on several chromosomes, some on one side only: every path of geniml's
    streaming search (skipped chromosomes, regions swallowed by its read-ahead)."""
    from geniml.likelihood.build_model import ModelLH

    g, udf, frames = _random_case(100 + seed, n_chroms=12, L=3000, n_files=2)
    chroms = sorted(set(udf.chrom), key=lambda c: int(c[3:]))
    # the likelihood model needs coverage on every universe chromosome (else geniml's is NaN)
    frames[-1] = pd.concat([frames[-1], pd.DataFrame({"chrom": chroms, "start": 5, "end": 60})], ignore_index=True)
    paths = _write(frames, tmp_path)
    names = [os.path.basename(p) for p in paths]
    udf = udf.assign(chrom=pd.Categorical(udf.chrom, chroms, ordered=True)).sort_values(["chrom", "start"])
    udf["chrom"] = udf["chrom"].astype(str)
    u = methods.Universe(udf.reset_index(drop=True), "toy", g, {})
    up = str(tmp_path / "universe.bed")
    u.write(up)
    cov = CoverageTracks.from_regions(frames, g, progress=False)
    cov.write_bigwig(tmp_path / "cov")
    _quiet(ModelLH(str(tmp_path / "model.tar")).make, str(tmp_path / "cov"), "all", cov.n_files)
    ref = _geniml_reference(str(tmp_path), names, up, True, str(tmp_path / "model.tar"), str(tmp_path / "cov"))
    table = A.assess(up, paths, coverage=cov, progress=False, geniml_quirks=True)
    diffs = _compare(table, ref, True)
    assert max(diffs.values()) < 1e-12, diffs
    assert table.attrs["likelihood"] == pytest.approx(ref["likelihood"], rel=1e-12)
    assert table.attrs["likelihood_flexible"] == pytest.approx(ref["likelihood_flexible"], rel=1e-12)


# -- errors and output ---------------------------------------------------------------------
@pytest.fixture
def toy(tmp_path):
    g = Genome("toy", {"chr1": 10_000, "chr2": 5_000})
    u = tmp_path / "universe.bed"
    u.write_text("chr1\t100\t500\nchr1\t900\t1200\nchr2\t50\t80\n")
    a = tmp_path / "a.bed"
    a.write_text("chr1\t120\t400\nchr2\t60\t200\n")
    return g, u, a, tmp_path


def test_errors(toy):
    g, u, a, d = toy
    with pytest.raises(AtacformerError, match="empty collection"):
        A.assess(u, [], genome=g)
    with pytest.raises(InputFormatError, match="missing.bed: no such file"):
        A.assess(u, [a, d / "missing.bed"], genome=g)
    with pytest.raises(InputFormatError, match="nouniverse.bed: no such file"):
        A.assess(d / "nouniverse.bed", [a], genome=g)
    bad = d / "bad.bed"
    bad.write_text("chr1\t1\t5\nchr7\t10\t20\n")
    with pytest.raises(GenomeMismatchError) as e:
        A.assess(u, [a, bad], genome=g)
    assert "bad.bed, line 2" in str(e.value) and "chr7" in str(e.value)
    badu = d / "badu.bed"
    badu.write_text("chr1\t1\t5\nchr1\t7\t9\nchrZ\t10\t20\n")
    with pytest.raises(GenomeMismatchError) as e:
        A.assess(badu, [a], genome=g)
    assert "badu.bed, line 3" in str(e.value) and "chrZ" in str(e.value)
    past = d / "past.bed"
    past.write_text("chr2\t4900\t5100\n")
    with pytest.raises(GenomeMismatchError, match="past.bed.*past its chromosome"):
        A.assess(u, [a, past], genome=g)
    table = A.assess(u, [a, past], genome=g, clip=True, progress=False)
    assert table["file_only_bp"].iloc[1] == 100
    core = d / "core.bed"
    core.write_text("chr1\t100\t500\tu\t0\t.\t150\t450\t0\nchr1\t900\t1200\tu\t0\t.\t950\t1300\t0\n")
    with pytest.raises(InputFormatError) as e:
        A.assess(core, [a], genome=g)
    assert "core.bed, line 2" in str(e.value) and "core_end" in str(e.value)
    notint = d / "notint.bed"
    notint.write_text("chr1\t100\t500\tu\t0\t.\t150\tx\t0\n")
    with pytest.raises(InputFormatError, match="notint.bed, line 1.*thickEnd"):
        A.read_universe(notint)
    with pytest.raises(AtacformerError, match="not flexible"):
        A.universe_likelihood(u, CoverageTracks.from_beds([a], g, progress=False), flexible=True)
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["universe.bed", "a.bed", "bad.bed", "badu.bed", "past.bed", "core.bed", "notint.bed"])


def test_write_report(toy):
    g, u, a, d = toy
    table = A.assess(u, [a, a], genome=g, progress=False, geniml_quirks=True)
    out = A.write_report(table, d / "report.tsv")
    back = pd.read_csv(out, sep="\t", comment="#")
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    head = [ln for ln in out.read_text().splitlines() if ln.startswith("#")]
    assert any(ln.startswith("# likelihood\t") for ln in head)
    before = out.read_bytes()
    with pytest.raises(OutputError, match="exists"):
        A.write_report(table.iloc[:1], out)
    assert out.read_bytes() == before
    A.write_report(table.iloc[:1], out, overwrite=True)
    assert len(pd.read_csv(out, sep="\t", comment="#")) == 1
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]
    # toy figures by hand: universe 400 + 300 + 30 bp; the file 280 + 140 bp, 280 + 20 shared
    row = table.iloc[0]
    assert (row["both_bp"], row["universe_only_bp"], row["file_only_bp"]) == (300, 430, 120)
    # starts 120 -> 100 and 60 -> 50, ends 400 -> 500 and 200 -> 80; geniml skips chr1, where
    # the universe has fewer than three regions and is not at its last chromosome
    assert row["median_dist_file_to_universe"] == np.median([10, 120])
    fixed = A.assess(u, [a], genome=g, likelihood=False, geniml_quirks=False, progress=False)
    assert fixed["median_dist_file_to_universe"].iloc[0] == np.median([20, 10, 100, 120])


def test_scores():
    assert A.rbs_score(0, 0) == pytest.approx(1.01)
    assert np.isnan(A.f_score(0.0, 0.0))
    p, r = 0.3, 0.8
    assert A.f_score(p, r) == pytest.approx(101 * p * r / (100 * p + r))
