"""Coverage tracks and universe builders against per-base brute force, every-path search,
hmmlearn and geniml, on real region sets."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pandas as pd
import pytest

from atacformer.errors import AtacformerError, GenomeMismatchError, InputFormatError
from atacformer.genome import Genome, get_genome
from atacformer.io.bed import read_bed
from atacformer.vocab.universe import CoverageTracks, Track, build, cc, ccf, hmm, intersection, lh, union
from atacformer.vocab.universe import methods as M
from atacformer.vocab.universe._kernels import lh_paths, viterbi_paths

BULK = ["test_ataqc_full_chr_ppr.naive_overlap.filt.narrowPeak.gz",
        "reg2map_honeybadger2_dnase_prom_p2.hg19_to_hg38.bed.gz",
        "hg38_celltype_compare_subsample.bed.gz",
        "test_ataqc_full_chr_ppr.IDR0.05.filt.narrowPeak.gz",
        "ppr.overlap.bfilt.narrowPeak.gz"]


@pytest.fixture(scope="module")
def bulk(data_dir):
    """The five ENCODE / Roadmap hg38 region sets, chr19 and chr22 (clipped at chromosome ends)."""
    d = data_dir / "bulk_peaks_encode_roadmap_hg38"
    hg = get_genome("hg38")
    g = Genome("hg38-chr19-chr22", {c: hg.chrom_sizes[c] for c in ("chr19", "chr22")})
    frames = []
    for f in BULK:
        df = read_bed(d / f)
        df = df[df["chrom"].isin(g.chroms)].copy()
        df["end"] = np.minimum(df["end"], df["chrom"].map(g.chrom_sizes))
        frames.append(df)
    return frames, g, CoverageTracks.from_regions(frames, g)


@pytest.fixture(scope="module")
def samples(data_dir):
    d = data_dir / "bulk_peaks_encode_roadmap_hg38" / "geniml_bedbase_samples_hg38"
    return sorted(str(p) for p in d.glob("*.bed"))


def _per_base(frames, g, chrom, smooth=25):
    """Per-base core / start / end counts written from the definitions alone."""
    L = g.chrom_sizes[chrom]
    core = np.zeros(L, np.int32)
    st = np.zeros(L, np.int32)
    en = np.zeros(L, np.int32)
    for df in frames:
        df = df[df["chrom"] == chrom].drop_duplicates(["chrom", "start", "end"])
        covered = np.zeros(L, bool)
        for s, e in zip(df["start"], df["end"]):
            covered[s:e] = True
            st[max(0, s - smooth):s + smooth + 1] += 1
            en[max(0, e - 1 - smooth):e + smooth] += 1
        core += covered
    return {"core": core, "start": st, "end": en}


def _runs(mask):
    m = np.concatenate([[False], mask, [False]])
    d = np.diff(m.astype(np.int8))
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1)


def test_tracks_equal_per_base_counts(bulk):
    frames, g, cov = bulk
    ref = _per_base(frames, g, "chr22")
    for kind, want in ref.items():
        np.testing.assert_array_equal(cov.track(kind, "chr22").dense(), want, err_msg=kind)
    t = cov.track("core", "chr22")
    assert t.total() == int(ref["core"].sum())
    assert (np.diff(t.val) != 0).all()  # runs are maximal


def test_union_intersection_cc_equal_brute_force(bulk):
    frames, g, cov = bulk
    core = _per_base(frames, g, "chr22")["core"]
    for u, cut in [(union(cov), 1), (intersection(cov), cov.n_files), (cc(cov, 2), 2), (cc(cov, 3), 3)]:
        r = u.regions[u.regions["chrom"] == "chr22"]
        s, e = _runs(core >= cut)
        np.testing.assert_array_equal(r["start"].to_numpy(), s)
        np.testing.assert_array_equal(r["end"].to_numpy(), e)
    assert len(union(cov)) > len(cc(cov, 2)) > len(cc(cov, 3)) > 0
    # default cutoff: each chromosome's mean coverage (below 1 here, so CC is the union)
    default = cc(cov)
    assert cov.mean_coverage("core", "chr22") < 1
    pd.testing.assert_frame_equal(default.regions, union(cov).regions)


def test_bigwig_round_trip_and_geniml_reads_ours(bulk, tmp_path):
    pytest.importorskip("geniml")
    from geniml.utils import read_chromosome_from_bw

    frames, g, cov = bulk
    paths = cov.write_bigwig(tmp_path)
    back = CoverageTracks.read_bigwig(tmp_path, n_files=cov.n_files)
    for kind, path in paths.items():
        for c in cov.chroms:
            a, b = cov.track(kind, c), back.track(kind, c)
            np.testing.assert_array_equal(a.pos, b.pos)
            np.testing.assert_array_equal(a.val, b.val)
        np.testing.assert_array_equal(read_chromosome_from_bw(str(path), "chr22"), cov.track(kind, "chr22").dense())
    assert not list(tmp_path.glob(".*tmp"))


# -- LH and HMM against every path -------------------------------------------------------------
def _lh_score(path, cove, models):
    allowed = {(j, j) for j in range(4)} | {(3, 0), (0, 1), (1, 2), (2, 3)}
    if any((a, b) not in allowed for a, b in zip(path[:-1], path[1:])):
        return -np.inf
    total = 0.0
    for x, state in zip(cove, path):
        for tr in range(3):
            total += models[tr][x[tr], 1 if state == tr else 0]
    return total


def test_lh_path_is_the_best_of_every_path():
    rng = np.random.default_rng(0)
    for _ in range(25):
        n = int(rng.integers(2, 8))
        cove = rng.integers(0, 4, size=(n, 3))
        models = [np.log10(rng.uniform(0.01, 1, size=(4, 2))) for _ in range(3)]
        out = np.full(n, 9, np.int8)
        lh_paths(cove, np.array([0]), np.array([n]), models[0], models[1], models[2], out)
        best = max(_lh_score(p, cove, models) for p in itertools.product(range(4), repeat=n))
        assert np.isclose(_lh_score(tuple(out), cove, models), best)


def _hmm_score(path, obs, log_start, log_T, log_pmf):
    s = log_start[path[0]]
    for t, state in enumerate(path):
        if t:
            s += log_T[path[t - 1], state]
        s += sum(log_pmf[state, r, obs[t, r]] for r in range(obs.shape[1]))
    return s


def test_viterbi_is_the_best_of_every_path_and_equals_hmmlearn():
    from scipy.stats import poisson

    hmmlearn = pytest.importorskip("hmmlearn.hmm")
    rng = np.random.default_rng(1)
    lam = M.HMM_LAMBDAS
    v = np.arange(12)
    log_pmf = np.stack([np.stack([poisson.logpmf(v, lam[s, r]) for r in range(3)]) for s in range(4)])
    with np.errstate(divide="ignore"):
        log_T, log_p0 = np.log(M.HMM_TRANSITIONS), np.log(M.HMM_START)
    for _ in range(20):
        n = int(rng.integers(2, 7))
        obs = rng.integers(0, 8, size=(n, 3))
        out = np.full(n, 9, np.int8)
        viterbi_paths(obs, np.array([0]), np.array([n]), log_p0, log_T, log_pmf, out)
        best = max(_hmm_score(p, obs, log_p0, log_T, log_pmf) for p in itertools.product(range(4), repeat=n))
        assert np.isclose(_hmm_score(tuple(out), obs, log_p0, log_T, log_pmf), best)
    # hmmlearn's own decoder, on long sequences
    model = hmmlearn.PoissonHMM(n_components=4, init_params="", params="")
    model.startprob_, model.transmat_, model.lambdas_ = M.HMM_START, M.HMM_TRANSITIONS, lam
    for _ in range(5):
        n = 3000
        obs = np.zeros((n, 3), np.int64)
        for a in rng.integers(0, n - 200, size=8):
            obs[a:a + 150] = rng.integers(0, 9, size=(150, 3))
        out = np.full(n, 9, np.int8)
        viterbi_paths(obs, np.array([0]), np.array([n]), log_p0, log_T, log_pmf, out)
        np.testing.assert_array_equal(out, model.predict(obs))


# -- against geniml on the same bigWig tracks ---------------------------------------------------
def _geniml_regions(path):
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return np.zeros((0, 4), np.int64)
    t = pd.read_csv(path, sep="\t", header=None)
    cols = [1, 2, 6, 7] if t.shape[1] >= 8 else [1, 2]
    return t[cols].to_numpy(np.int64)


def _ours(u):
    cols = ["start", "end", "core_start", "core_end"] if "core_start" in u.regions else ["start", "end"]
    return u.regions[cols].to_numpy(np.int64)


@pytest.fixture(scope="module")
def chr22_tracks(bulk, tmp_path_factory):
    frames, g, _ = bulk
    g22 = Genome("hg38-chr22", {"chr22": g.chrom_sizes["chr22"]})
    cov = CoverageTracks.from_regions([f[f["chrom"] == "chr22"] for f in frames], g22)
    folder = tmp_path_factory.mktemp("cov22")
    cov.write_bigwig(folder)
    return cov, folder


def test_cc_and_ccf_equal_geniml(chr22_tracks, tmp_path):
    pytest.importorskip("geniml")
    from geniml.universe.cc_universe import cc_universe
    from geniml.universe.ccf_universe import ccf_universe

    cov, folder = chr22_tracks
    cc_universe(str(folder), str(tmp_path / "cc.bed"), cutoff=2)
    np.testing.assert_array_equal(_ours(cc(cov, 2)), _geniml_regions(tmp_path / "cc.bed"))
    ccf_universe(str(folder), str(tmp_path / "ccf.bed"))
    ours = ccf(cov)
    assert len(ours) > 100
    np.testing.assert_array_equal(_ours(ours), _geniml_regions(tmp_path / "ccf.bed"))


def test_lh_and_hmm_equal_geniml(chr22_tracks, tmp_path):
    pytest.importorskip("geniml")
    from geniml.likelihood.build_model import main as build_lh_model
    from geniml.universe.hmm_universe import hmm_universe
    from geniml.universe.ml_universe import ml_universe

    cov, folder = chr22_tracks
    build_lh_model(str(tmp_path / "model.tar"), str(folder), "all", file_no=cov.n_files)
    ml_universe(str(tmp_path / "model.tar"), str(folder), "all", str(tmp_path / "lh.bed"))
    ours = lh(cov)
    assert len(ours) > 1000
    np.testing.assert_array_equal(_ours(ours), _geniml_regions(tmp_path / "lh.bed"))
    hmm_universe(str(folder), str(tmp_path / "hmm.bed"))
    ours = hmm(cov)
    assert len(ours) > 1000
    np.testing.assert_array_equal(_ours(ours), _geniml_regions(tmp_path / "hmm.bed"))
    r = ours.regions
    assert (r["start"] <= r["core_start"]).all() and (r["core_start"] <= r["core_end"]).all()
    assert (r["core_end"] < r["end"]).all() and (r["start"].diff().dropna() > 0).all()


def test_lh_model_equals_geniml(chr22_tracks, tmp_path):
    pytest.importorskip("geniml")
    from geniml.likelihood.build_model import ModelLH, main as build_lh_model

    cov, folder = chr22_tracks
    build_lh_model(str(tmp_path / "m.tar"), str(folder), "all", file_no=cov.n_files)
    m = ModelLH(str(tmp_path / "m.tar"))
    m.read_chrom("chr22")
    for kind in ("start", "core", "end"):
        theirs = m["chr22"][kind]
        ours = M.lh_model(cov.track(kind, "chr22"), cov.n_files)
        ok = np.isfinite(theirs)  # geniml's is undefined where a value exceeds the number of files
        np.testing.assert_allclose(ours[ok], theirs[ok], rtol=0, atol=1e-12)


def test_batches_change_nothing(chr22_tracks, monkeypatch):
    cov, _ = chr22_tracks
    whole = {f.__name__: f(cov).regions for f in (ccf, lh, hmm)}
    monkeypatch.setattr(M, "CHUNK_BASES", 3000)  # many batches, stretches split across none
    for f in (ccf, lh, hmm):
        pd.testing.assert_frame_equal(f(cov).regions, whole[f.__name__])


def test_hmm_fit_and_settings(chr22_tracks):
    cov, _ = chr22_tracks
    fitted = hmm(cov, fit=True, fit_bases=200_000)
    assert len(fitted) > 0 and fitted.params["fit"]
    T = np.asarray(fitted.params["transitions"])
    assert np.allclose(T.sum(1), 1) and (T[M.HMM_TRANSITIONS == 0] == 0).all()
    with pytest.raises(ValueError, match="4 x 4"):
        hmm(cov, transitions=np.eye(3))


# -- outputs and bad inputs --------------------------------------------------------------------
def test_write_and_vocabulary(bulk, tmp_path):
    from atacformer.vocab import Vocabulary

    _, g, cov = bulk
    u = hmm(cov)
    out = u.write(tmp_path / "u.bed.gz")
    v = Vocabulary.from_bed(out, genome=None)
    assert v.n_regions == len(u)
    np.testing.assert_array_equal(v.starts, u.regions["start"].to_numpy())
    back = pd.read_csv(out, sep="\t", header=None)
    np.testing.assert_array_equal(back[6].to_numpy(), u.regions["core_start"].to_numpy())
    with pytest.raises(AtacformerError, match="exists"):
        u.write(out)
    assert u.to_vocabulary().n_regions == len(u)


def test_samples_all_methods_run(samples):
    cov = CoverageTracks.from_beds(samples, genome="hg38")
    sizes = {m: len(build(cov, m)) for m in M.METHODS}
    assert sizes["union"] >= sizes["cc"] > 0
    assert sizes["intersection"] <= sizes["union"]


def test_bad_inputs(samples, tmp_path, data_dir):
    with pytest.raises(AtacformerError, match="empty collection"):
        CoverageTracks.from_beds([], genome="hg38")
    cov = CoverageTracks.from_beds(samples, genome="hg38")
    with pytest.raises(AtacformerError, match="above the number of region sets"):
        cc(cov, cov.n_files + 1)
    with pytest.raises(ValueError, match="applies to the cc method"):
        build(cov, "hmm", cutoff=2)
    bad = tmp_path / "bad.bed"
    bad.write_text("chr1\t100\t200\nchr1\t300\t400\nchrZZ\t5\t10\n")
    with pytest.raises(GenomeMismatchError) as e:
        CoverageTracks.from_beds([samples[0], bad], genome="hg38")
    assert "bad.bed" in str(e.value) and "line 3" in str(e.value) and "chrZZ" in str(e.value)
    past = tmp_path / "past.bed"
    past.write_text("chr22\t50818400\t50818500\n")
    with pytest.raises(GenomeMismatchError, match="past its chromosome"):
        CoverageTracks.from_beds([past], genome="hg38")
    assert len(CoverageTracks.from_beds([past], genome="hg38", clip=True).chroms) == 1
    # two genomes: an hg38 set and a mouse set, no genome given
    mouse = tmp_path / "mouse.bed"
    mouse.write_text("chr1\t195000000\t195000100\nchr19\t61000000\t61000100\n")
    hg38_far = tmp_path / "hg38.bed"
    hg38_far.write_text("chr1\t240000000\t240000100\n")
    with pytest.raises(InputFormatError, match="do not fit one genome"):
        CoverageTracks.from_beds([mouse, hg38_far])
    # unplaced contigs the genome lacks are dropped, not an error
    contig = tmp_path / "contig.bed"
    contig.write_text("chr1\t100\t200\nchr14_GL000009v2_random\t5\t10\n")
    assert CoverageTracks.from_beds([contig], genome="hg38").chroms == ["chr1"]


def test_track_basics():
    t = Track.from_intervals(np.array([5, 8, 20]), np.array([10, 12, 25]), 30)
    want = np.zeros(30, np.int32)
    for s, e in [(5, 10), (8, 12), (20, 25)]:
        want[s:e] += 1
    np.testing.assert_array_equal(t.dense(), want)
    np.testing.assert_array_equal(t.dense(7, 22), want[7:22])
    assert Track.from_dense(want).pos.tolist() == t.pos.tolist()
    vals, counts = t.value_counts()
    uv, uc = np.unique(want, return_counts=True)
    np.testing.assert_array_equal(vals, uv)
    np.testing.assert_array_equal(counts, uc)
