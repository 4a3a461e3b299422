"""The ATAC-aware DNA ranker (LeRoy 2025 ch. 3): its list-wise loss against a hand computation,
spans against a brute-force construction and the FASTA read with gzip, the GC baseline and
the ranking metrics against plain counts and scipy, training on real chr22 spans through the
one loop, the model folder round trip, and bad inputs."""

from __future__ import annotations

import gzip
import math
from itertools import permutations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from atacformer.errors import GenomeMismatchError, InputFormatError
from atacformer.models.dna_ranker import DnaRankerConfig, DnaRankerModel, listnet_loss, target_distribution
from atacformer.tools._dna_ranker import (
    build_spans, gc_fraction, peak_accessibility, predict_scores, ranking_metrics, train_dna_ranker,
)

REPO = Path(__file__).resolve().parents[2]
DATA = (REPO / ".." / "shared" / "data").resolve()
FASTA = DATA / "hg19_chr22_1-22Mb_fasta" / "hg19_chr22_1-22000000.fa.gz"
SETS = [DATA / "buenrostro2018_BM0828_ra3" / "buenrostro2018_BM0828_533cells.h5ad",
        DATA / "chromvar_example_gm12878_h1" / "chromvar_gm12878_h1_50.h5ad"]

needs_data = pytest.mark.skipif(not FASTA.is_file() or not all(p.is_file() for p in SETS),
                                reason=f"real data absent: {FASTA.parent} and the hg19 labelled sets "
                                       "(see ../shared/data/README.md)")


@pytest.fixture(scope="module")
def peaks():
    return [peak_accessibility(p) for p in SETS]


@pytest.fixture(scope="module")
def chr22():
    """chr22:1-22,000,000 read with gzip and plain string handling (not the package's reader)."""
    with gzip.open(FASTA, "rt") as f:
        return "".join(line.strip() for line in f if not line.startswith(">"))


# --------------------------------------------------------------------------------------------
def test_listnet_loss_equals_hand_computation():
    scores = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    acc = torch.tensor([[0.2, 0.5, 0.0], [0.1, 0.1, 0.0]])
    target = target_distribution(acc, "rank")
    # ranks (0 = least accessible, ties share the mean rank) divided by their sum
    expected_target = [[1 / 3, 2 / 3, 0.0], [1.5 / 3, 1.5 / 3, 0.0]]
    torch.testing.assert_close(target, torch.tensor(expected_target))
    hand = 0.0
    for s, t in zip(scores.tolist(), expected_target):
        z = math.log(sum(math.exp(v) for v in s))
        hand += -sum(ti * (si - z) for si, ti in zip(s, t))
    assert float(listnet_loss(scores, target)) == pytest.approx(hand / 2, rel=1e-6)
    # ListNet's own target (Cao 2007): softmax of the values
    soft = target_distribution(acc, "softmax", temperature=0.5)
    e = [math.exp(v / 0.5) for v in [0.2, 0.5, 0.0]]
    assert soft[0].tolist() == pytest.approx([v / sum(e) for v in e], rel=1e-6)


def test_ranking_metrics_against_brute_force_and_scipy():
    from scipy.stats import kendalltau

    rng = np.random.default_rng(0)
    acc = rng.random((200, 3))
    scores = rng.random((200, 3))
    scores[:20, 1] = scores[:20, 0]  # ties: expected credit under random tie-breaking
    scores[20:25] = 1.0
    m = ranking_metrics(scores, acc)
    full, pair, tau = [], [], []
    for s, a in zip(scores, acc):
        truth = tuple(np.argsort(a))
        orders = [p for p in permutations(range(3)) if all(s[p[i]] <= s[p[i + 1]] for i in range(2))]
        full.append(sum(p == truth for p in orders) / len(orders))
        c = [(np.sign(s[i] - s[j]) * np.sign(a[i] - a[j])) for i in range(3) for j in range(i + 1, 3)]
        pair.append(np.mean([1.0 if x > 0 else 0.5 if x == 0 else 0.0 for x in c]))
        tau.append(np.mean(c))
    assert m["full_order"] == pytest.approx(np.mean(full))
    assert m["pairwise"] == pytest.approx(np.mean(pair))
    assert m["kendall_tau"] == pytest.approx(np.mean(tau))
    untied = slice(25, None)
    assert ranking_metrics(scores[untied], acc[untied])["kendall_tau"] == pytest.approx(
        np.mean([kendalltau(s, a).statistic for s, a in zip(scores[untied], acc[untied])]))
    assert ranking_metrics(np.zeros((7, 3)), acc[:7])["full_order"] == pytest.approx(1 / 6)


# --------------------------------------------------------------------------------------------
def _brute_spans(peaks, lo, hi, w=500, n=3, shift=10, min_nonzero=2, min_value=None):
    pooled = [(r.start, r.end, r.accessibility / len(peaks)) for t in peaks
              for r in t[t["chrom"] == "chr22"].itertuples() if r.accessibility > 0 and r.end > r.start]
    if min_value is None:  # a tenth of the median peak's share of the mean over data sets
        min_value = 0.1 * float(np.median([v / len(peaks) for t in peaks for v in t["accessibility"] if v > 0]))
    span, step = n * w, n * w // shift
    local = [p for p in pooled if p[1] > lo and p[0] < hi]
    out = []
    for s in range(-(-lo // step) * step, hi - span + 1, step):
        vals = []
        for j in range(n):
            a, b = s + j * w, s + (j + 1) * w
            vals.append(sum(v * max(0, min(b, pe) - max(a, ps)) / (pe - ps) for ps, pe, v in local))
        vals = [0.0 if v < min_value else v for v in vals]
        if sum(v > 0 for v in vals) >= min_nonzero and len({round(v / max(vals), 9) for v in vals}) == n:
            out.append((s, vals))
    return out


@needs_data
def test_spans_equal_brute_force_and_the_fasta(peaks, chr22):
    lo, hi = 19_000_000, 19_600_000
    spans = build_spans(peaks, FASTA, chroms=["chr22"], start=lo, end=hi)
    brute = _brute_spans(peaks, lo, hi)
    assert len(spans) > 20
    assert spans.table["start"].tolist() == [s for s, _ in brute]
    np.testing.assert_allclose(spans.accessibility, np.array([v for _, v in brute]), rtol=1e-5, atol=1e-9)
    assert (spans.table["end"] - spans.table["start"]).eq(1500).all()
    lazy = build_spans(peaks, FASTA, chroms=["chr22"], start=lo, end=hi, keep_sequence=False)
    assert lazy.codes is None and lazy.table.equals(spans.table)
    np.testing.assert_array_equal(lazy.sequences(np.arange(len(lazy))), spans.codes)
    lut = {c: i for i, c in enumerate("ACGT")}
    for k in range(0, len(spans), 7):
        s = int(spans.table["start"].iat[k])
        seq = chr22[s: s + 1500]
        assert spans.codes[k].ravel().tolist() == [lut.get(ch.upper(), 4) for ch in seq]
        for j in range(3):  # GC baseline: a plain count over the window's string
            win = seq[j * 500:(j + 1) * 500].upper()
            acgt = sum(win.count(b) for b in "ACGT")
            assert gc_fraction(spans.codes[k:k + 1])[0, j] == pytest.approx(
                (win.count("G") + win.count("C")) / acgt)


@needs_data
def test_ranker_loss_falls_and_folder_round_trips(peaks, tmp_path):
    from atacformer.models import load_model

    spans = build_spans(peaks, FASTA, chroms=["chr22"], start=19_000_000, end=21_000_000)
    cfg = DnaRankerConfig(channels=[16], kernel_sizes=[15], pool_sizes=[4], head_hidden=16, dropout=0.0)
    torch.manual_seed(0)
    before = DnaRankerModel(cfg.replace(region_length=500))

    def loss(model):
        s = torch.from_numpy(predict_scores(model, spans.codes))
        return float(listnet_loss(s, target_distribution(torch.from_numpy(spans.accessibility))))

    model = train_dna_ranker(spans, tmp_path / "run", config=cfg, max_steps=40, batch_size=32, lr=3e-3,
                             warmup_steps=2, seed=0)
    assert loss(model) < loss(before) - 0.01
    again = load_model(tmp_path / "run" / "model")
    assert isinstance(again, DnaRankerModel)
    np.testing.assert_array_equal(predict_scores(again, spans.codes[:50]), predict_scores(model, spans.codes[:50]))
    # spans without their bases in memory read them from the FASTA: the same scores
    lazy = build_spans(peaks, FASTA, chroms=["chr22"], start=19_000_000, end=19_200_000, keep_sequence=False)
    np.testing.assert_array_equal(predict_scores(model, lazy), predict_scores(model, lazy.sequences(range(len(lazy)))))


# --------------------------------------------------------------------------------------------
def _tiny_peaks():
    return pd.DataFrame({"chrom": ["chr22"], "start": [100], "end": [300], "accessibility": [0.5]})


def test_fasta_without_index_is_refused(tmp_path):
    fa = tmp_path / "g.fa"
    fa.write_text(">chr22\n" + "ACGT" * 200 + "\n")
    with pytest.raises(InputFormatError, match="no index"):
        build_spans(_tiny_peaks(), fa, region_length=100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.fa"]


@needs_data
def test_other_chromosome_and_end_past_the_fasta_are_refused(tmp_path):
    other = _tiny_peaks().assign(chrom="chr1")
    with pytest.raises(GenomeMismatchError, match="not in the FASTA"):
        build_spans(other, FASTA)
    with pytest.raises(GenomeMismatchError, match="ends past"):
        build_spans(_tiny_peaks(), FASTA, chroms=["chr22"], start=21_000_000, end=23_000_000)
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_a_fasta_without_index_and_writes_nothing(tmp_path, capsys):
    import anndata as ad

    from atacformer.cli import main

    cells = ad.AnnData(np.array([[1, 0], [1, 1]], np.float32),
                       var=pd.DataFrame({"chrom": ["chr22", "chr22"], "start": [100, 400], "end": [300, 600]},
                                        index=["p0", "p1"]))
    cells.write_h5ad(tmp_path / "cells.h5ad")
    fa = tmp_path / "g.fa"
    fa.write_text(">chr22\n" + "ACGT" * 300 + "\n")
    rc = main(["dna-ranker", "train", str(tmp_path / "cells.h5ad"), "--fasta", str(fa), "--region-length", "100",
               "-o", str(tmp_path / "run")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "g.fa" in err and "no index" in err
    assert not (tmp_path / "run").exists()


@needs_data
def test_empty_stretch_is_refused():
    with pytest.raises(ValueError, match="is empty"):
        build_spans(_tiny_peaks(), FASTA, chroms=["chr22"], start=21_000_000, end=20_000_000)
