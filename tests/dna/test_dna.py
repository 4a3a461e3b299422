"""DNA features per region (atacformer.vocab.dna) on real hg19 chr22 sequence, checked against
plain Python k-mer counting and Bio.motifs PSSM scoring."""

from __future__ import annotations

import os
from collections import Counter

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from atacformer.errors import GenomeMismatchError, InputFormatError
from atacformer.vocab import Vocabulary
from atacformer.vocab import dna

FASTA = "hg19_chr22_1-22Mb_fasta/hg19_chr22_1-22000000.fa.gz"
SPAN = (16_050_000, 22_000_000)  # real sequence of the file (before: N)


@pytest.fixture(scope="module")
def fasta(data_dir):
    return data_dir / FASTA


_REF = {}


def _seq(fasta, chrom, s, e):
    """Reference sequence from an independent reader: pyfaidx, one fetch of chr22:16-22 Mb
    (it decompresses a bgzip record from its start on every fetch)."""
    import pyfaidx

    assert chrom == "chr22" and s >= 16_000_000
    if fasta not in _REF:
        _REF[fasta] = str(pyfaidx.Fasta(str(fasta), as_raw=True, build_index=False).faidx.fetch(
            "chr22", 16_000_001, 22_000_000))
    return _REF[fasta][s - 16_000_000:e - 16_000_000]


def _canon(s):
    rc = s[::-1].translate(str.maketrans("ACGT", "TGCA"))
    return min(s, rc)


def test_kmers_equal_python_counter(fasta):
    # 5 kb bins of the file's span, a sample, plus regions crossing the N boundary at 16.05 Mb
    v = Vocabulary.from_bins("hg19", 5000, chroms=["chr22"])
    keep = (v.starts >= SPAN[0]) & (v.ends <= SPAN[1])
    rng = np.random.default_rng(1)
    idx = np.sort(rng.choice(np.flatnonzero(keep), 12, replace=False))
    regs = pd.DataFrame({"chrom": ["22"] * 12 + ["chr22"] * 3,  # Ensembl-style names are matched too
                         "start": np.r_[v.starts[idx], 16_049_990, 16_049_000, 16_050_000],
                         "end": np.r_[v.ends[idx], 16_050_400, 16_049_500, 16_050_003]})
    a = dna.region_features(regs, fasta, kmers=(2, 4, 6), motifs=None, progress=False)
    assert a.shape == (15, 10 + 136 + 2080)
    assert set(a.var["kind"]) == {"kmer"}
    assert a.obs["chrom"].iat[0] == "chr22" and a.obs_names[0] == f"chr22:{regs.start[0]}-{regs.end[0]}"
    for i in range(len(regs)):
        s = _seq(fasta, "chr22", regs.start[i], regs.end[i]).upper()
        for k in (2, 4, 6):
            c = Counter(_canon(s[j:j + k]) for j in range(len(s) - k + 1) if set(s[j:j + k]) <= set("ACGT"))
            tot = sum(c.values())
            cols = a.var_names[(a.var["kind"] == "kmer") & (a.var_names.str.len() == k)]
            got = a[i, cols].X.ravel()
            exp = np.array([c.get(n, 0) / tot if tot else 0.0 for n in cols], dtype=np.float32)
            np.testing.assert_allclose(got, exp, rtol=1e-6, atol=1e-7, err_msg=f"region {i}, k={k}")
    # the all-N region and the too-short one have zero rows
    assert a.X[13].sum() == 0
    assert a.X[14, a.var_names.str.len() == 6].sum() == 0


@pytest.fixture(scope="module")
def motif_case(fasta):
    rng = np.random.default_rng(0)
    st = np.sort(rng.integers(SPAN[0] - 300, SPAN[1] - 1000, 200))
    regs = pd.DataFrame({"chrom": "chr22", "start": st, "end": st + rng.integers(25, 700, 200)})
    mots = dna.load_jaspar("JASPAR2024")
    sel = np.sort(rng.choice(len(mots), 20, replace=False))
    ms = dna.MotifSet.from_bio([mots[i] for i in sel], pvalue=1e-4)
    a = dna.region_features(regs, fasta, kmers=(), motifs=ms, progress=False)
    return regs, [mots[i] for i in sel], ms, a


def test_motif_thresholds_equal_bio(motif_case):
    from Bio.motifs import jaspar as bj

    _, mots, ms, _ = motif_case
    short = np.argsort([m.length for m in mots])[:3]  # Bio's distribution is slow for long motifs
    for j in short:
        m = mots[j]
        pssm = m.counts.normalize(pseudocounts=bj.calculate_pseudocounts(m)).log_odds()
        assert ms.thresholds[j] == pssm.distribution(precision=1000).threshold_fpr(1e-4)
        np.testing.assert_array_equal(ms.pssms[j], [[pssm[b][i] for b in "ACGT"] for i in range(m.length)])


def test_motif_scores_equal_bio(fasta, motif_case):
    from Bio.motifs import jaspar as bj

    regs, mots, ms, a = motif_case
    assert list(a.var["kind"].unique()) == ["motif_max", "motif_count"]
    assert a.var_names[0] == f"{mots[0].matrix_id}_max" and a.var["name"].iat[0] == mots[0].name
    mx, cnt = a.X[:, :len(ms)], a.X[:, len(ms):]
    seqs = [_seq(fasta, "chr22", s, e) for s, e in zip(regs.start, regs.end)]
    n_checked = n_hits = 0
    for j, m in enumerate(mots):
        pssm = m.counts.normalize(pseudocounts=bj.calculate_pseudocounts(m)).log_odds()
        rc = pssm.reverse_complement()
        thr = ms.thresholds[j]
        for r, s in enumerate(seqs):
            if len(s) < m.length:
                assert np.isnan(mx[r, j]) and cnt[r, j] == 0
                continue
            f, b = np.atleast_1d(pssm.calculate(s)), np.atleast_1d(rc.calculate(s))
            both = np.concatenate([f, b])
            exp_max = np.nanmax(both) if np.isfinite(both).any() else np.nan
            exp_cnt = int((f >= thr).sum() + (b >= thr).sum())
            np.testing.assert_equal(mx[r, j], np.float32(exp_max), err_msg=f"{m.matrix_id} region {r}")
            assert cnt[r, j] == exp_cnt, (m.matrix_id, r)
            n_checked += 1
            n_hits += exp_cnt
    assert n_checked > 3000 and n_hits > 50  # the comparison saw real hits
    assert np.isnan(mx).any()  # regions inside the N block


def _tiny_hf_model(path):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "A", "C", "G", "T", "N"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=256)
    fast.save_pretrained(path)
    import torch

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=256)
    BertModel(cfg).eval().save_pretrained(path)


def test_hf_encoder_tiny_local_model(tmp_path, fasta):
    pytest.importorskip("transformers")
    import torch
    from transformers import AutoModel, AutoTokenizer

    _tiny_hf_model(tmp_path / "tiny")
    enc = dna.HFEncoder(tmp_path / "tiny", device="cpu", batch_size=3)
    assert isinstance(enc, dna.DNAEncoder)
    seqs = ["ACGTACGTTT", "ggccN", "A" * 300, "TTGACA"]
    x = enc.encode(seqs)
    assert x.shape == (4, 16) and x.dtype == np.float32
    np.testing.assert_array_equal(x, enc.encode(seqs))
    tok = AutoTokenizer.from_pretrained(tmp_path / "tiny", local_files_only=True)
    model = AutoModel.from_pretrained(tmp_path / "tiny", local_files_only=True).eval()
    for s, row in zip(seqs, x):  # one at a time (no padding), mean over the tokens
        t = tok(s.upper(), return_tensors="pt", truncation=True, max_length=256)
        with torch.inference_mode():
            h = model(**t).last_hidden_state[0]
        np.testing.assert_allclose(row, h.mean(0).numpy(), rtol=1e-5, atol=1e-6)
    # through region_features: one block of "encoder" columns, rows in region order
    regs = pd.DataFrame({"chrom": "chr22", "start": [17_000_000, 17_500_000], "end": [17_000_120, 17_500_090]})
    a = dna.region_features(regs, fasta, kmers=(), motifs=None, encoder=enc, progress=False)
    assert a.shape == (2, 16) and set(a.var["kind"]) == {"encoder"}
    exp = enc.encode([_seq(fasta, "chr22", s, e) for s, e in zip(regs.start, regs.end)])
    np.testing.assert_allclose(a.X, exp, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputFormatError):
        dna.HFEncoder(tmp_path / "absent")


def test_bad_inputs(tmp_path, fasta):
    regs = pd.DataFrame({"chrom": ["chr22"], "start": [17_000_000], "end": [17_000_100]})
    # no .fai / no .gzi next to a bgzip FASTA (links to the real file)
    (tmp_path / "g.fa.gz").symlink_to(fasta)
    with pytest.raises(InputFormatError, match=r"g\.fa\.gz.*no index.*\.fai"):
        dna.region_features(regs, tmp_path / "g.fa.gz", kmers=(4,), motifs=None)
    (tmp_path / "g.fa.gz.fai").symlink_to(str(fasta) + ".fai")
    with pytest.raises(InputFormatError, match=r"g\.fa\.gz.*no block index.*\.gzi"):
        dna.region_features(regs, tmp_path / "g.fa.gz", kmers=(4,), motifs=None)
    assert not (tmp_path / "g.fa.gz.gzi").exists()  # nothing was built or written
    # chromosome names
    with pytest.raises(GenomeMismatchError, match=r"not in the FASTA.*'chr21'"):
        dna.region_features(pd.DataFrame({"chrom": ["21"], "start": [0], "end": [10]}), fasta, kmers=(4,), motifs=None)
    # past the sequence end
    with pytest.raises(GenomeMismatchError, match=r"chr22:21999900-22000100 ends past.*22,000,000"):
        dna.region_features(pd.DataFrame({"chrom": ["chr22"], "start": [21_999_900], "end": [22_000_100]}), fasta,
                            kmers=(4,), motifs=None)
    with pytest.raises(FileNotFoundError):
        dna.region_features(regs, tmp_path / "absent.fa", kmers=(4,), motifs=None)


def test_cli_end_to_end(tmp_path, fasta, motif_case):
    from atacformer.cli import main

    regs, mots, ms, ref = motif_case
    bed = tmp_path / "universe.bed"
    regs.assign(chrom="22").to_csv(bed, sep="\t", header=False, index=False)
    out = tmp_path / "features.h5ad"
    assert main(["region-features", str(bed), "--fasta", str(fasta), "--kmers", "4", "-o", str(out)]) == 0
    a = ad.read_h5ad(out)
    assert a.n_obs == len(regs)
    kinds = a.var["kind"].value_counts()
    assert kinds["kmer"] == 136 and kinds["motif_max"] == kinds["motif_count"] > 800
    assert list(a.obs["start"]) == list(regs.start)
    cols = [f"{m.matrix_id}_max" for m in mots] + [f"{m.matrix_id}_count" for m in mots]
    np.testing.assert_array_equal(a[:, cols].X, ref.X)
    assert a.uns["dna_features"]["motifs"] == "JASPAR2024"
    tab = dna.dna_table(a)
    assert tab.shape == (len(regs), a.n_vars) and tab.dtype == np.float32 and np.isfinite(tab).all()
    np.save(tmp_path / "dna.npy", tab)
    from atacformer.train.build import load_dna_table

    assert load_dna_table(tmp_path / "dna.npy", len(regs)).shape == tab.shape
    # existing output without --overwrite; bad FASTA: refused, nothing written
    assert main(["region-features", str(bed), "--fasta", str(fasta), "--kmers", "4", "--motifs", "none",
                 "-o", str(out)]) != 0
    bad = tmp_path / "bad.h5ad"
    assert main(["region-features", str(bed), "--fasta", str(tmp_path / "nope.fa"), "-o", str(bad)]) != 0
    assert not bad.exists() and not os.path.exists(str(bad) + ".tmp.h5ad")
    assert main(["region-features", str(bed), "--fasta", str(fasta), "--kmers", "4", "--motifs", "none",
                 "-o", str(out), "--overwrite"]) == 0
    assert ad.read_h5ad(out).n_vars == 136


def test_motif_scan_equals_brute_force_on_edge_cases():
    """Motifs of 3 to 21 columns (one, two and five 5-column blocks, the reverse strand's
    blocks in another order), a sequence with N runs and lower-case-free letters coded 4,
    regions shorter than a motif, touching, overlapping, 12 kb and 150 kb long (indexed in
    three segments) and one all N: max score and hit count equal the double sum of every
    window's columns in order (Bio.motifs' rule)."""
    rng = np.random.default_rng(3)
    n = 200_000
    codes = rng.integers(0, 4, n).astype(np.uint8)
    codes[5_000:5_040] = 4  # an N run inside a region
    codes[190_000:190_300] = 4  # a region of Ns only
    codes[rng.integers(0, n, 30)] = 4  # single Ns
    pssms, ids = [], []
    for j, L in enumerate([3, 5, 6, 9, 11, 15, 21]):
        M = rng.normal(0, 1.5, (L, 4))
        M[np.arange(L), rng.integers(0, 4, L)] += 2.5  # a consensus, so that hits exist
        pssms.append(M)
        ids.append(f"m{j}")
    lens = np.array([len(M) for M in pssms])
    thr = np.array([0.55 * M.max(axis=1).sum() for M in pssms])
    ms = dna.MotifSet(ids, ids, pssms, 1e-4, thr)
    starts = np.array([0, 4_990, 5_000, 5_002, 9_000, 9_004, 12_000, 24_000, 39_990, 20_000, 40_000, 190_000])
    ends = np.array([4_990, 5_100, 5_010, 5_004, 9_010, 9_020, 24_000, 24_500, 40_000, 20_000, 190_000, 190_300])
    mx, cnt = dna.scan_motifs(codes, starts, ends, ms)
    for r, (s, e) in enumerate(zip(starts, ends)):
        for m, M in enumerate(pssms):
            L = len(M)
            rc = M[::-1, ::-1]
            if e - s < L:
                scores = []
            else:  # every window at once, its columns added in order (the same additions)
                W = np.lib.stride_tricks.sliding_window_view(codes[s:e], L)
                W = W[(W <= 3).all(axis=1)]
                scores = []
                for mat in (M, rc):
                    sc = np.zeros(len(W))
                    for j in range(L):
                        sc = sc + mat[j, W[:, j]]
                    scores += list(sc.astype(np.float32))
            if not scores:
                assert np.isnan(mx[r, m]) and cnt[r, m] == 0, (r, m)
                continue
            assert mx[r, m] == max(scores), (r, m)
            assert cnt[r, m] == sum(x >= thr[m] for x in scores), (r, m)
    assert cnt.sum() > 100 and np.isnan(mx).any()
