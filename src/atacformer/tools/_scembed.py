"""scEmbed / Region2Vec baseline: Word2Vec over cells-as-documents (SPEC 4.3).

Each cell is a document whose words are its accessible regions (the column indices of its
non-zero entries, as strings). Region order within a cell carries no meaning, so every
epoch trains on freshly shuffled documents; gensim is driven one epoch at a time with the
learning rate decaying exponentially across epochs, from ``alpha`` to ``min_alpha``
(``alpha * (min_alpha / alpha) ** (e / epochs)`` at the start of epoch ``e``; gensim
interpolates linearly inside an epoch). A cell's embedding is the mean of the vectors of
its regions; regions never seen in training (or below ``min_count``) have no vector and are
skipped, and a cell with none of them gets the zero vector (with a logged warning).

gensim silently truncates documents longer than 10,000 words, so a longer cell is cut
into consecutive pieces after its shuffle (the pieces of one shuffled cell are samples of
the same bag of regions, so no context is invented). gensim seeds each word's initial
vector from ``hash(word)``, which Python randomises per process; a stable hash is passed
instead, so that with ``workers=1`` a run is reproducible.
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["ScEmbedModel", "scembed", "scembed_project"]

_GENSIM_MAX_WORDS = 10_000


def _stable_hash(text: str) -> int:
    return zlib.crc32(text.encode())


def _binary_csr(x) -> sp.csr_matrix:
    m = sp.csr_matrix(x, dtype=np.float32, copy=True)
    m.eliminate_zeros()
    m.data[:] = 1.0
    return m


@dataclass
class ScEmbedModel:
    """Trained region vectors, enough to embed any dataset with the same regions.

    Parameters
    ----------
    vectors
        ``(n_regions, dim)`` float32; rows of unseen regions are zero.
    seen
        ``(n_regions,)`` bool: the region has a trained vector.
    region_names
        The regions' names (the training AnnData's ``var_names``), used to align a query.
    params
        Training parameters.

    Examples
    --------
    >>> import numpy as np
    >>> m = ScEmbedModel(np.eye(3, dtype=np.float32), np.array([True, True, False]),
    ...                  np.array(["a", "b", "c"]))
    >>> m.embed(np.array([[1, 1, 0], [0, 0, 1]]))[0].tolist()
    [[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]
    """

    vectors: np.ndarray
    seen: np.ndarray
    region_names: np.ndarray
    params: dict = field(default_factory=dict)

    @classmethod
    def from_adata(cls, adata: AnnData, key: str = "X_scembed") -> "ScEmbedModel":
        """Rebuild the model that :func:`scembed` stored in ``adata`` under ``key``."""
        if key not in adata.varm or f"{key}_seen" not in adata.var:
            raise ValueError(f"no scEmbed model under key {key!r} (run tl.scembed first)")
        return cls(np.asarray(adata.varm[key], dtype=np.float32),
                   adata.var[f"{key}_seen"].to_numpy(bool),
                   adata.var_names.to_numpy(str), dict(adata.uns.get(key, {}).get("params", {})))

    def embed(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Mean region vector of each row of a cells x regions matrix in this model's columns.

        Returns ``(embedding, n_used)``: ``(n_cells, dim)`` float32 and, per cell, how many
        of its regions had a vector.
        """
        if x.shape[1] != self.vectors.shape[0]:
            raise ValueError(
                f"matrix has {x.shape[1]} columns, the model {self.vectors.shape[0]} regions"
            )
        b = _binary_csr(x) @ sp.diags(self.seen.astype(np.float32))
        n_used = np.asarray(b.sum(axis=1)).ravel()
        emb = np.asarray(b @ self.vectors, dtype=np.float64)
        emb = np.divide(emb, n_used[:, None], out=np.zeros_like(emb), where=n_used[:, None] > 0)
        n_empty = int((n_used == 0).sum())
        if n_empty:
            logger.warning("scembed: %d cells have no region with a vector; zero embedding",
                           n_empty)
        return emb.astype(np.float32), n_used.astype(np.int64)

    def save(self, path: str | Path) -> None:
        """Write the model to one ``.npz`` file (no pickle)."""
        np.savez_compressed(path, vectors=self.vectors, seen=self.seen,
                            region_names=self.region_names.astype(str),
                            params=np.array(json.dumps(self.params)))

    @classmethod
    def load(cls, path: str | Path) -> "ScEmbedModel":
        """Read a model written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as f:
            return cls(f["vectors"], f["seen"], f["region_names"], json.loads(str(f["params"])))


def _epoch_documents(docs: list[np.ndarray], rng: np.random.Generator) -> list[list[str]]:
    """Shuffle each cell's regions and split past gensim's document length limit."""
    out = []
    for d in docs:
        words = rng.permutation(d).astype(str).tolist()
        out.extend(words[i:i + _GENSIM_MAX_WORDS] for i in range(0, len(words), _GENSIM_MAX_WORDS))
    return out


def _train_word2vec(docs, *, dim, window, epochs, min_count, sg, negative, alpha, min_alpha,
                    workers, seed):
    from gensim.models import Word2Vec

    rng = np.random.default_rng(seed)
    model = Word2Vec(vector_size=dim, window=window, min_count=min_count, sg=int(sg),
                     negative=negative, alpha=alpha, min_alpha=min_alpha, workers=workers,
                     seed=seed, hashfxn=_stable_hash)
    model.build_vocab(_epoch_documents(docs, rng))
    rates = alpha * (min_alpha / alpha) ** (np.arange(epochs + 1) / epochs)
    for e in range(epochs):
        corpus = _epoch_documents(docs, rng)
        model.train(corpus, total_examples=len(corpus), epochs=1,
                    start_alpha=float(rates[e]), end_alpha=float(rates[e + 1]))
        logger.debug("scembed: epoch %d/%d, lr %.5f -> %.5f", e + 1, epochs, rates[e], rates[e + 1])
    return model


def scembed(
    adata: AnnData,
    dim: int = 100,
    window: int = 5,
    epochs: int = 10,
    *,
    min_count: int = 1,
    sg: bool = False,
    negative: int = 5,
    alpha: float = 0.1,
    min_alpha: float = 1e-4,
    workers: int = 1,
    seed: int = 0,
    layer: str | None = None,
    key_added: str = "X_scembed",
    copy: bool = False,
) -> AnnData | None:
    """Train scEmbed (Region2Vec) on the cells of ``adata`` and embed them.

    Parameters
    ----------
    adata
        Cells x regions counts (or a binary matrix) in ``X`` or ``layers[layer]``.
    dim
        Vector size.
    window
        Word2Vec context window, in regions of the shuffled document.
    epochs
        Training epochs, each over newly shuffled documents (the seed thesis trains up to
        100; 10 is geniml's default).
    min_count
        Regions accessible in fewer cells get no vector.
    sg
        Skip-gram instead of CBOW (gensim's default, and geniml's).
    negative
        Negative samples per positive.
    alpha, min_alpha
        Learning rate at the first and after the last epoch (exponential decay between);
        geniml's Region2Vec defaults. On Schep 600 (10 epochs, CBOW) k-means ARI was 0.16
        with 0.1 against 0.11 with gensim's 0.025.
    workers
        gensim threads; above 1 training is faster but no longer reproducible.
    seed
        Seed of the shuffles and of gensim.
    layer
        Read from this layer instead of ``X``.
    key_added
        ``obsm[key_added]``: cell embeddings; ``varm[key_added]``: region vectors (zero
        rows for unseen regions); ``var[key_added + "_seen"]``: which regions have one;
        ``uns[key_added]["params"]``: training parameters. :class:`ScEmbedModel`
        ``.from_adata`` turns these back into a model for :func:`scembed_project`.
    copy
        Work on a copy and return it.

    Returns
    -------
    AnnData or None
        The copy when ``copy=True``.

    Examples
    --------
    >>> import anndata as ad, scipy.sparse as sp
    >>> from atacformer import tools as tl
    >>> a = ad.AnnData(sp.random(50, 200, density=0.2, format="csr", random_state=0))
    >>> tl.scembed(a, dim=8, epochs=2)
    >>> a.obsm["X_scembed"].shape
    (50, 8)
    """
    if epochs < 1 or dim < 1 or window < 1:
        raise ValueError(f"scembed: dim={dim}, window={window}, epochs={epochs} must be >= 1")
    if not 0 < min_alpha <= alpha:
        raise ValueError(f"scembed: need 0 < min_alpha <= alpha (got {min_alpha}, {alpha})")
    adata = adata.copy() if copy else adata
    m = _binary_csr(adata.layers[layer] if layer is not None else adata.X)
    docs = [m.indices[m.indptr[i]:m.indptr[i + 1]].copy() for i in range(m.shape[0])]
    w2v = _train_word2vec(docs, dim=dim, window=window, epochs=epochs, min_count=min_count,
                          sg=sg, negative=negative, alpha=alpha, min_alpha=min_alpha,
                          workers=workers, seed=seed)
    vectors = np.zeros((m.shape[1], dim), dtype=np.float32)
    seen = np.zeros(m.shape[1], dtype=bool)
    cols = np.array([int(w) for w in w2v.wv.index_to_key], dtype=np.int64)
    vectors[cols] = w2v.wv.vectors
    seen[cols] = True
    params = {"dim": dim, "window": window, "epochs": epochs, "min_count": min_count,
              "sg": bool(sg), "negative": negative, "alpha": alpha, "min_alpha": min_alpha,
              "workers": workers, "seed": seed}
    model = ScEmbedModel(vectors, seen, adata.var_names.to_numpy(str), params)
    emb, _ = model.embed(m)
    adata.obsm[key_added] = emb
    adata.varm[key_added] = vectors
    adata.var[f"{key_added}_seen"] = seen
    adata.uns[key_added] = {"params": params}
    logger.info("scembed: %d of %d regions have vectors; %d cells embedded in %d dims",
                int(seen.sum()), seen.size, adata.n_obs, dim)
    return adata if copy else None


def scembed_project(
    adata: AnnData,
    model: ScEmbedModel | AnnData,
    *,
    key: str = "X_scembed",
    key_added: str | None = None,
    layer: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Embed a new dataset with trained scEmbed region vectors (no training).

    Columns are matched to the model's regions by name (``var_names``); a query region
    the model does not know is ignored, like an unseen region.

    Parameters
    ----------
    adata
        Query cells x regions.
    model
        A :class:`ScEmbedModel`, or the reference AnnData that :func:`scembed` ran on.
    key
        Key of the model in a reference AnnData.
    key_added
        ``obsm`` key of the query embedding (default: ``key``).
    layer
        Read the query from this layer instead of ``X``.
    copy
        Work on a copy and return it.

    Returns
    -------
    AnnData or None
        The copy when ``copy=True``.

    Examples
    --------
    >>> import anndata as ad, scipy.sparse as sp
    >>> from atacformer import tools as tl
    >>> ref = ad.AnnData(sp.random(50, 200, density=0.2, format="csr", random_state=0))
    >>> tl.scembed(ref, dim=8, epochs=2)
    >>> query = ad.AnnData(sp.random(20, 200, density=0.2, format="csr", random_state=1))
    >>> tl.scembed_project(query, ref)
    >>> query.obsm["X_scembed"].shape
    (20, 8)
    """
    if isinstance(model, AnnData):
        model = ScEmbedModel.from_adata(model, key)
    adata = adata.copy() if copy else adata
    x = sp.csr_matrix(adata.layers[layer] if layer is not None else adata.X)
    names = adata.var_names.to_numpy(str)
    if not np.array_equal(names, model.region_names):
        pos = {n: i for i, n in enumerate(model.region_names)}
        idx = np.array([pos.get(n, -1) for n in names])
        found = idx >= 0
        if not found.any():
            raise ValueError("scembed_project: no query var_name is a region of the model")
        logger.warning("scembed_project: %d of %d query regions are in the model (by name)",
                       int(found.sum()), names.size)
        sel = np.flatnonzero(found)
        x = (x[:, sel] @ sp.csr_matrix(
            (np.ones(sel.size), (np.arange(sel.size), idx[sel])),
            shape=(sel.size, model.region_names.size))).tocsr()
    emb, _ = model.embed(x)
    adata.obsm[key_added or key] = emb
    return adata if copy else None
