"""Options that aim at better cell embeddings from short pretraining runs.

- :func:`token_frequencies`: corpus token frequencies, the replacement distribution of
  :class:`~atacformer.models.ReplacedTokenCollator` (``token_probs=``): a uniformly drawn
  replacement is usually a region almost never open, which the head spots from rarity alone.
- :func:`idf_weights`: per-token inverse document frequency (LSI's), for IDF-weighted pooling in
  :func:`~atacformer.models.embed_cells` (``token_weights=``).
- :func:`init_embeddings_from_lsi`: token embeddings initialised from the region loadings
  of a TF-IDF + truncated SVD (LSI) of the training cells, so that pooling starts from an
  LSI-like space instead of random vectors.
- :func:`two_views` and :func:`cell_contrastive_loss`: a cell-level InfoNCE term between
  two disjoint random token subsets of the same cell (SimCLR-style, symmetric).

These functions take arrays and tensors, never AnnData (the AnnData layer is
:mod:`atacformer.tools`).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def _binary(x) -> sp.csr_matrix:
    m = sp.csr_matrix(x, copy=True)
    m.eliminate_zeros()
    m.data[:] = 1.0
    return m.astype(np.float32)


def token_frequencies(X, vocab_size: int | None = None, smoothing: float = 1.0) -> np.ndarray:
    """Fraction of cells in which each region is open, as a probability distribution.

    Parameters
    ----------
    X
        Cells x regions CSR (tokenized cells).
    vocab_size
        Length of the output (default ``X.shape[1]``); extra entries get only smoothing.
    smoothing
        Pseudo-count added to every region, so that no region has probability 0.

    Returns
    -------
    numpy.ndarray
        (vocab_size,) float64 summing to 1.

    Examples
    --------
    >>> token_frequencies(sp.csr_matrix([[1, 0, 2], [1, 0, 0]]), smoothing=0.0)
    array([0.66666667, 0.        , 0.33333333])
    """
    counts = np.asarray(_binary(X).sum(0)).ravel().astype(np.float64)
    n = vocab_size or len(counts)
    out = np.full(n, smoothing, dtype=np.float64)
    out[: len(counts)] += counts
    return out / out.sum()


def idf_weights(X, vocab_size: int | None = None) -> np.ndarray:
    """Inverse document frequency per token, LSI's own (:func:`atacformer.pp.tfidf_matrix`):
    ``n_cells / n_cells_open``, 0 for a region no cell opens and for special tokens (columns
    past ``X.shape[1]``). Rare regions weigh the most, as in LSI's TF-IDF.

    Examples
    --------
    >>> idf_weights(sp.csr_matrix([[1, 1], [1, 0]]), vocab_size=3)
    array([1., 2., 0.], dtype=float32)
    """
    from atacformer.preprocessing import inverse_document_frequency

    idf = inverse_document_frequency(X)
    out = np.zeros(vocab_size or X.shape[1], dtype=np.float32)
    out[: len(idf)] = idf
    return out


def lsi_loadings(X, n_components: int, seed: int = 0) -> np.ndarray:
    """Region loadings (n_regions, n_components) of a TF-IDF (:func:`atacformer.pp.tfidf_matrix`,
    LSI's defaults) + truncated SVD, the first (depth-driven) component dropped, each column
    scaled by its singular value relative to the first kept one."""
    from sklearn.utils.extmath import randomized_svd

    from atacformer.preprocessing import tfidf_matrix

    m = _binary(X)
    tfidf, _ = tfidf_matrix(m)  # the package's one TF-IDF, as LSI uses it
    k = min(n_components + 1, min(m.shape) - 1)
    _, s, vt = randomized_svd(tfidf, k, random_state=seed)
    return (vt[1:].T * s[1:] / s[1]).astype(np.float32)  # (n_regions, k - 1)


def init_embeddings_from_lsi(model, X, scale: float = 1.0, seed: int = 0, n_components: int | None = None,
                             offset: float = 0.0) -> int:
    """Overwrite an Atacformer's region embeddings with LSI region loadings.

    The first ``k`` dimensions of each region's row get its loadings on the LSI components
    2..k+1 (``k = n_components``, default up to ``hidden_size``, bounded by the data),
    scaled so that rows have a mean norm of ``scale``. With ``offset`` the remaining
    dimensions are set to that constant (else they keep their random initialisation): a
    large constant block makes every token's LayerNorm statistics nearly equal, so the
    per-token LayerNorms of the encoder keep the loadings' relative magnitudes (without it,
    each token is rescaled to unit variance and weakly loaded regions weigh as much as
    strongly loaded ones).

    Parameters
    ----------
    model
        :class:`AtacformerModel` or :class:`AtacformerForReplacedTokenDetection`.
    X
        Training cells x regions CSR in the model's vocabulary.
    scale
        Target mean row norm of the loadings part.
    n_components
        LSI components used (default ``hidden_size``, or ``hidden_size - 1`` with ``offset``).
    offset
        Value of the dimensions past the loadings (0: keep them random).
    seed
        Seed of the randomized SVD.

    Returns
    -------
    int
        Number of dimensions initialised.

    Examples
    --------
    >>> init_embeddings_from_lsi(model, cells.X)   # doctest: +SKIP
    """
    backbone = getattr(model, "atacformer", model)
    table = backbone.embeddings.token_embeddings.weight  # (V, D)
    n_regions = model.config.n_regions
    if X.shape[1] != n_regions:
        raise ValueError(f"X has {X.shape[1]} columns; the model has {n_regions} regions")
    d = model.config.hidden_size
    want = n_components or (d - 1 if offset else d)
    load = lsi_loadings(X, min(want, d - (1 if offset else 0), min(X.shape) - 2), seed)
    norms = np.linalg.norm(load, axis=1)
    load *= scale / max(float(norms[norms > 0].mean()) if (norms > 0).any() else 1.0, 1e-12)
    k = load.shape[1]
    with torch.no_grad():
        table[:n_regions, :k] = torch.from_numpy(load).to(table)
        if offset:
            table[:n_regions, k:] = offset
    logger.info("initialised %d of %d embedding dimensions from LSI loadings", k, table.shape[1])
    return k


def two_views(token_lists, rng: np.random.Generator, fraction: float = 0.5,
              max_length: int | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split every cell's tokens into two disjoint random subsets (genomic order kept).

    A cell with one token gives it to both views. With ``max_length`` each view is further
    subsampled to that many tokens.

    Examples
    --------
    >>> a, b = two_views([np.arange(10)], np.random.default_rng(0))
    >>> len(a[0]) + len(b[0]), len(np.intersect1d(a[0], b[0]))
    (10, 0)
    """
    va, vb = [], []
    for t in token_lists:
        t = np.asarray(t)
        if len(t) < 2:
            va.append(t)
            vb.append(t)
            continue
        pick = rng.random(len(t)) < fraction
        if pick.all() or not pick.any():
            pick[rng.integers(len(t))] = not pick[0]
        a, b = t[pick], t[~pick]
        if max_length is not None:
            a = a[np.sort(rng.permutation(len(a))[:max_length])]
            b = b[np.sort(rng.permutation(len(b))[:max_length])]
        va.append(a)
        vb.append(b)
    return va, vb


def cell_contrastive_loss(za: torch.Tensor, zb: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE between two views of the same cells.

    Parameters
    ----------
    za, zb
        (B, D) cell embeddings of view A and view B (row i: the same cell).
    temperature
        Softmax temperature of the cosine similarities.

    Returns
    -------
    torch.Tensor
        Scalar loss; ``log(B)`` for embeddings that carry no information.

    Examples
    --------
    >>> z = torch.eye(4)
    >>> float(cell_contrastive_loss(z, z, 0.05)) < 1e-3
    True
    """
    za = F.normalize(za.float(), dim=-1)
    zb = F.normalize(zb.float(), dim=-1)
    logits = za @ zb.T / temperature  # (B, B)
    target = torch.arange(len(za), device=za.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
