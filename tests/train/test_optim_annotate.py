"""The learning-rate schedule and optimizer groups; region classes for <eos> per class."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from atacformer.vocab.annotate import annotate_regions, classes_from_bed, promoter_windows
from atacformer.train.optim import build_optimizer, build_scheduler
from atacformer.vocab import Vocabulary


def test_schedule_follows_warmup_then_cosine():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.AdamW([p], lr=2.0)
    sched = build_scheduler(opt, warmup_steps=4, max_steps=20, min_ratio=0.1)
    seen = []
    for _ in range(25):
        seen.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    for s, lr in enumerate(seen):  # written out independently of the code under test
        if s < 4:
            want = 2.0 * (s + 1) / 4
        else:
            t = min((s - 4) / 16, 1.0)
            want = 2.0 * (0.1 + 0.9 * (1 + math.cos(math.pi * t)) / 2)
        assert lr == pytest.approx(want, rel=1e-12)


def test_no_weight_decay_on_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Embedding(5, 4))
    opt = build_optimizer(model, 1e-3, 0.1, (0.9, 0.98), 1e-8, torch.device("cpu"))
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[1]["weight_decay"] == 0.0
    assert decayed == {id(model[0].weight), id(model[2].weight)}


def test_promoter_windows_are_strand_aware():
    tss = pd.DataFrame({"chrom": ["chr1"] * 3, "start": [10_000] * 3, "end": [10_001] * 3,
                        "strand": ["+", "-", "."]})
    w = promoter_windows(tss)
    assert w[["start", "end"]].values.tolist() == [[9000, 10101], [9900, 11001], [9000, 11001]]


def _naive_classes(vocab, tss, genes):
    out = []
    for c, s, e in zip(vocab.chroms, vocab.starts, vocab.ends):
        prom = any(ch == c and max(s, lo) < min(e, hi) for ch, lo, hi in tss)
        body = any(ch == c and max(s, gs) < min(e, ge) for ch, gs, ge in genes)
        out.append(0 if prom else (1 if body else 2))
    return np.array(out)


def test_annotate_regions_against_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    starts = np.sort(rng.integers(0, 200_000, 300))
    vocab = Vocabulary(["chr1"] * 300, starts, starts + rng.integers(1, 3000, 300))
    genes = pd.DataFrame({"chrom": "chr1", "start": rng.integers(0, 190_000, 20)})
    genes["end"] = genes["start"] + rng.integers(500, 20_000, 20)
    genes["name"], genes["score"] = "g", 0
    genes["strand"] = rng.choice(["+", "-"], 20)
    gpath = tmp_path / "genes.bed"
    genes.to_csv(gpath, sep="\t", header=False, index=False)
    classes, names = annotate_regions(vocab, genes=gpath)
    assert names == ["promoter", "gene_body", "intergenic"]
    tss_pos = np.where(genes.strand == "-", genes.end - 1, genes.start)
    windows = [("chr1", p - 1000, p + 101) if st == "+" else ("chr1", p - 100, p + 1001)
               for p, st in zip(tss_pos, genes.strand)]
    want = _naive_classes(vocab, windows, list(zip(genes.chrom, genes.start, genes.end)))
    assert np.array_equal(classes, want)
    assert set(np.unique(classes)) == {0, 1, 2}


def test_classes_from_labelled_bed_use_priority(tmp_path):
    vocab = Vocabulary(["chr1"] * 4, [0, 100, 200, 300], [100, 200, 300, 400])
    bed = tmp_path / "labels.bed"
    bed.write_text("chr1\t50\t150\tenhancer\nchr1\t120\t130\tpromoter\nchr1\t210\t220\tenhancer\n")
    classes, names = classes_from_bed(vocab, bed, priority=["promoter", "enhancer"])
    assert names == ["promoter", "enhancer", "other"]
    assert classes.tolist() == [1, 0, 1, 2]


def test_real_hg19_annotation_on_schep_peaks(schep_h5ad):
    import anndata as ad

    ann = schep_h5ad.parents[1] / "genome_annotations" / "hg19"
    a = ad.read_h5ad(schep_h5ad, backed="r")
    vocab = Vocabulary(a.var["chrom"].astype(str).to_numpy(), a.var["start"].to_numpy(), a.var["end"].to_numpy())
    classes, names = annotate_regions(vocab, tss=ann / "hg19_tss.archr.bed.gz", genes=ann / "hg19_genes.archr.bed.gz")
    frac = np.bincount(classes, minlength=3) / len(classes)
    # scATAC peak sets are promoter-rich: every class present, promoters a sizeable share
    assert (frac > 0.05).all() and frac[0] > 0.1, dict(zip(names, frac.round(3)))
