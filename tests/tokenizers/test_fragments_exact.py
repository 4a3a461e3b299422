"""Fragment tokenization equals independent brute-force computations on real files.

Brute force for bins: a plain Python loop over every fragment and every bin it touches.
Brute force for a peak universe: dense numpy broadcasting of each chunk of fragments
against every region of its chromosome (no index, no sorting). Both are independent of
the package's interval kernels.
"""

import gzip
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from atacformer.errors import InputFormatError
from atacformer.genome import normalize_chrom
from atacformer.io.bed import read_bed
from atacformer.tokenizers import tokenize_fragments
from atacformer.vocab import Vocabulary

FRAGMENT_FILES = {
    "macs3": ("fragments_macs3_chr22_100cells/test.fragments.tsv.gz", "hg38"),
    "muon": ("muon_pbmc_multiome_fragments_hg38/test_rna_atac_fragments.tsv.gz", "hg38"),
    "archr": ("archr_pbsmall_fragments_labeled/PBSmall.tsv.gz", "hg19"),
    "signac_header": ("signac_pbmc_small/fragments_header.tsv.gz", "hg19"),
}


def read_fragments_plain(path):
    """Plain-Python reader: list of (chrom, start, end, barcode)."""
    out = []
    with gzip.open(path, "rt") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            c, s, e, b = line.rstrip("\n").split("\t")[:4]
            out.append((normalize_chrom(c), int(s), int(e), b))
    return out


def as_counter(cells):
    """{(barcode, token_id): count} of a TokenizedCells."""
    X = cells.X.tocoo()
    return Counter({(cells.barcodes[r], int(c)): int(v) for r, c, v in zip(X.row, X.col, X.data)})


def brute_bins(frags, vocab, insertion=False):
    offs = vocab._chrom_offset()
    nb = vocab.chrom_region_counts()
    bs = vocab.bin_size
    cnt = Counter()
    for c, s, e, b in frags:
        if c not in offs:
            continue
        sites = [(s, s + 1), (e - 1, e)] if insertion else [(s, e)]
        for a, z in sites:
            for k in range(a // bs, (z - 1) // bs + 1):
                if a < z and k < nb[c]:
                    cnt[(b, offs[c] + k)] += 1
    return cnt


def brute_universe(frags, vocab):
    df = pd.DataFrame(frags, columns=["chrom", "start", "end", "bc"])
    cnt = Counter()
    for c, sub in df.groupby("chrom"):
        ids = np.flatnonzero(vocab.chroms == c)
        if not len(ids):
            continue
        rs, re_ = vocab.starts[ids], vocab.ends[ids]
        s, e, bc = sub["start"].to_numpy(), sub["end"].to_numpy(), sub["bc"].to_numpy()
        for k in range(0, len(s), 2000):
            hit = (np.maximum(s[k:k + 2000, None], rs[None]) < np.minimum(e[k:k + 2000, None], re_[None]))
            qi, ri = np.nonzero(hit)
            cnt.update(zip(bc[k:k + 2000][qi], ids[ri].tolist()))
    return cnt


@pytest.mark.parametrize("name", list(FRAGMENT_FILES))
@pytest.mark.parametrize("mode", ["fragment", "insertion"])
def test_bins_equal_brute_force(data_dir, name, mode):
    rel, genome = FRAGMENT_FILES[name]
    path = data_dir / rel
    vocab = Vocabulary.from_bins(genome, 5000)
    frags = read_fragments_plain(path)
    cells = tokenize_fragments(path, vocab, mode=mode, progress=False)
    assert as_counter(cells) == brute_bins(frags, vocab, insertion=mode == "insertion")
    # every barcode in the file is a row, with its number of lines as n_fragments
    per_bc = Counter(b for *_, b in frags)
    assert dict(zip(cells.barcodes, cells.obs["n_fragments"])) == dict(per_bc)


def _universe_for(data_dir, genome):
    if genome == "hg38":
        return [data_dir / "fragments_macs3_chr22_100cells/macs3_callpeak_frag_peaks.narrowPeak",
                data_dir / "bulk_peaks_encode_roadmap_hg38/test_ataqc_full_chr_ppr.naive_overlap.filt.narrowPeak.gz"]
    import anndata as ad  # hg19: the Buenrostro and Signac peak sets as universes

    out = []
    for rel in ("buenrostro2018_BM0828_ra3/buenrostro2018_BM0828_533cells.h5ad",
                "signac_pbmc_small/signac_pbmc_atac_small_100.h5ad"):
        var = ad.read_h5ad(data_dir / rel, backed="r").var
        out.append(Vocabulary(var["chrom"].to_numpy(), var["start"].to_numpy(), var["end"].to_numpy(), genome="hg19"))
    return out


@pytest.mark.parametrize("name", list(FRAGMENT_FILES))
def test_universe_equals_brute_force(data_dir, name):
    rel, genome = FRAGMENT_FILES[name]
    path = data_dir / rel
    frags = read_fragments_plain(path)
    total = 0
    for u in _universe_for(data_dir, genome):
        vocab = u if isinstance(u, Vocabulary) else Vocabulary.from_bed(u, genome=genome)
        want = brute_universe(frags, vocab)
        if not want:  # e.g. chr22 peaks for a file without chr22: refused, not all-empty cells
            with pytest.raises(InputFormatError, match="no fragment overlaps any of the"):
                tokenize_fragments(path, vocab, progress=False)
            continue
        cells = tokenize_fragments(path, vocab, progress=False)
        got = as_counter(cells)
        assert got == want
        total += sum(got.values())
    assert total > 0  # the comparison is not vacuous


def test_encode_universe_has_overlapping_regions(data_dir):
    """The naive-overlap ENCODE peak set has nested/overlapping peaks: the hard case."""
    df = read_bed(data_dir / "bulk_peaks_encode_roadmap_hg38/test_ataqc_full_chr_ppr.naive_overlap.filt.narrowPeak.gz")
    df = df.sort_values(["chrom", "start"])
    prev_end = df.groupby("chrom")["end"].shift()
    assert (df["start"] < prev_end).sum() > 0


def test_whitelist_and_min_fragments(data_dir):
    path = data_dir / FRAGMENT_FILES["macs3"][0]
    wl = [ln.strip() for ln in open(data_dir / "fragments_macs3_chr22_100cells/barcodes.txt") if ln.strip()]
    vocab = Vocabulary.from_bins("hg38", 5000)
    full = tokenize_fragments(path, vocab, progress=False)
    sub = tokenize_fragments(path, vocab, barcodes=wl + ["NOT_A_BARCODE"], progress=False)
    assert list(sub.barcodes) == wl + ["NOT_A_BARCODE"]
    assert sub.X[-1].nnz == 0 and sub.obs["n_fragments"].iloc[-1] == 0
    pos = {b: i for i, b in enumerate(full.barcodes)}
    for i, b in enumerate(wl):
        assert (sub.X[i] != full.X[pos[b]]).nnz == 0
    n = full.obs["n_fragments"].to_numpy()
    thr = int(np.median(n))
    kept = tokenize_fragments(path, vocab, min_fragments=thr, progress=False)
    assert set(kept.barcodes) == set(full.barcodes[n >= thr])


def test_small_blocks_equal_one_block(data_dir):
    """Streaming in tiny blocks (many block boundaries) gives the same matrix."""
    path = data_dir / FRAGMENT_FILES["muon"][0]
    vocab = Vocabulary.from_bins("hg38", 5000)
    a = tokenize_fragments(path, vocab, progress=False)
    b = tokenize_fragments(path, vocab, block_bytes=100_000, threads=0, progress=False)
    assert list(a.barcodes) == list(b.barcodes)
    assert (a.X != b.X).nnz == 0


def test_merging_partial_sums_changes_nothing(data_dir, monkeypatch):
    """Force the periodic merge of per-block partial sums on a real file: same matrix."""
    import atacformer.tokenizers.fragments as tf

    path = data_dir / FRAGMENT_FILES["muon"][0]
    vocab = Vocabulary.from_bins("hg38", 5000)
    ref = tokenize_fragments(path, vocab, progress=False)
    monkeypatch.setattr(tf, "MERGE_MIN_ENTRIES", 1000)
    got = tokenize_fragments(path, vocab, block_bytes=200_000, progress=False)
    assert list(got.barcodes) == list(ref.barcodes)
    assert (got.X != ref.X).nnz == 0
