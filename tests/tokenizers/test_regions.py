"""Peak matrices and BED files -> tokens, against brute force on real files."""

import gzip

import anndata as ad
import numpy as np

from atacformer.tokenizers import tokenize_bed, tokenize_peak_matrix
from atacformer.vocab import Vocabulary


def test_peak_matrix_to_bins_equals_brute_force(data_dir):
    path = data_dir / "buenrostro2018_BM0828_ra3/buenrostro2018_BM0828_533cells.h5ad"
    a = ad.read_h5ad(path)
    v = Vocabulary.from_bins("hg19", 5000)
    cells = tokenize_peak_matrix(path, v)
    offs = v._chrom_offset()
    # brute force: loop over peaks, add each peak's column to every bin it touches
    X = a.X.tocsc()
    want = np.zeros((a.n_obs, v.n_regions), dtype=np.int64)
    for j, (c, s, e) in enumerate(zip(a.var["chrom"], a.var["start"], a.var["end"])):
        col = X[:, j].toarray().ravel()
        for b in range(s // 5000, (e - 1) // 5000 + 1):
            want[:, offs[c] + b] += col
    assert np.array_equal(cells.X.toarray(), want)
    assert list(cells.barcodes) == list(a.obs_names)
    assert (cells.obs["cell_type"].to_numpy() == a.obs["cell_type"].to_numpy()).all()


def test_peak_matrix_onto_overlapping_universe(data_dir):
    """Signac peaks onto the (overlapping) Buenrostro... any universe: dense brute force."""
    path = data_dir / "schep2017_celllines_atacCoGAPS/schep2017_celllines_600.h5ad"
    a = ad.read_h5ad(path)
    var = ad.read_h5ad(data_dir / "buenrostro2018_BM0828_ra3/buenrostro2018_BM0828_533cells.h5ad", backed="r").var
    v = Vocabulary(var["chrom"].to_numpy(), var["start"].to_numpy() - 3000, var["end"].to_numpy() + 3000)
    cells = tokenize_peak_matrix(path, v)
    M = np.zeros((a.n_vars, v.n_regions), dtype=np.int64)
    for c in np.unique(a.var["chrom"]):
        pi = np.flatnonzero(a.var["chrom"].to_numpy() == c)
        ri = np.flatnonzero(v.chroms == c)
        ps, pe = a.var["start"].to_numpy()[pi], a.var["end"].to_numpy()[pi]
        hit = np.maximum(ps[:, None], v.starts[ri][None]) < np.minimum(pe[:, None], v.ends[ri][None])
        M[np.ix_(pi, ri)] = hit
    want = a.X.astype(np.int64) @ M
    assert np.array_equal(cells.X.toarray(), np.asarray(want))
    assert cells.X.nnz > 0


def test_bed_tokens_equal_brute_force(data_dir):
    bed = data_dir / "bulk_peaks_encode_roadmap_hg38/test_ataqc_full_chr_ppr.IDR0.05.filt.narrowPeak.gz"
    v = Vocabulary.from_bins("hg38", 5000)
    ids = tokenize_bed(bed, v)
    offs = v._chrom_offset()
    want = set()
    with gzip.open(bed, "rt") as f:
        for line in f:
            c, s, e = line.split("\t")[:3]
            for b in range(int(s) // 5000, (int(e) - 1) // 5000 + 1):
                want.add(offs[c] + b)
    assert ids.tolist() == sorted(want)
