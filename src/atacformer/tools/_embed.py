"""Model-based embeddings: cells (``tl.embed``) and regions (``tl.region_embeddings``).

``embed`` streams the cells of an AnnData (in memory or ``backed="r"``) through a model in
chunks, so only one chunk of tokens is held at once; with ``out_path`` the embeddings go to
a ``.npy`` memory map on disk instead of RAM. Optional post-processing mirrors what LSI
does to its components: drop the directions that follow sequencing depth, then scale every
cell to unit length (SnapATAC2 does the same to its spectral embedding).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData

logger = logging.getLogger(__name__)


def _matrix(adata: AnnData, layer: str | None):
    return adata.layers[layer] if layer is not None else adata.X


def _check_columns(adata: AnnData, model) -> None:
    n_regions = getattr(model.config, "n_regions", None) or getattr(model.config, "n_bins", None)
    if n_regions is not None and adata.n_vars != n_regions:
        raise ValueError(f"adata has {adata.n_vars:,} regions but the model's vocabulary has {n_regions:,}; "
                         "tokenize the cells into the model's vocabulary first "
                         "(atacformer.tokenizers.tokenize_peak_matrix(adata, model.vocab))")


def remove_depth_directions(emb: np.ndarray, depth: np.ndarray, cutoff: float = 0.5,
                            max_drop: int = 1) -> tuple[np.ndarray, list[int]]:
    """Principal components of ``emb`` minus those following log depth.

    Parameters
    ----------
    emb
        (n_cells, d) embedding.
    depth
        (n_cells,) tokens (or fragments) per cell.
    cutoff
        A component is dropped when ``|corr(component, log depth)|`` is above it.
    max_drop
        Most components dropped (the most depth-correlated first).

    Returns
    -------
    coords, dropped
        The PCA coordinates of the kept components and the indices dropped.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> depth = rng.integers(100, 10000, 200)
    >>> emb = np.c_[np.log(depth) * 5, rng.normal(size=(200, 3))]
    >>> remove_depth_directions(emb, depth)[1]
    [0]
    """
    x = emb - emb.mean(0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    pcs = u * s  # (n, d)
    ld = np.log1p(np.asarray(depth, dtype=np.float64))
    ld = (ld - ld.mean()) / (ld.std() + 1e-12)
    z = (pcs - pcs.mean(0)) / (pcs.std(0) + 1e-12)
    corr = np.abs(z.T @ ld) / len(ld)
    order = [int(i) for i in np.argsort(-corr) if corr[i] > cutoff][:max_drop]
    keep = [i for i in range(pcs.shape[1]) if i not in order]
    return pcs[:, keep].astype(np.float32), order


def embedding_settings(model) -> dict:
    """The embedding settings saved with a model: ``pooling``, ``remove_depth``,
    ``l2_normalize`` (a geniml folder: plain mean, nothing else)."""
    c = model.config
    return {"pooling": getattr(c, "pooling", None), "remove_depth": bool(getattr(c, "remove_depth", False)),
            "l2_normalize": bool(getattr(c, "l2_normalize", False))}


def embed(
    adata: AnnData,
    model,
    *,
    layer: str | None = None,
    batch_size: int = 64,
    device=None,
    pooling: str | None = None,
    max_length: int | None = None,
    remove_depth: bool | None = None,
    depth_corr_cutoff: float = 0.5,
    l2_normalize: bool | None = None,
    chunk_size: int = 8192,
    out_path=None,
    progress: bool = False,
    key_added: str = "X_atacformer",
    modality: str = "atac",
    copy: bool = False,
) -> AnnData | None:
    """Embed every cell of ``adata`` with a pretrained model into ``obsm[key_added]``.

    This is the package's one embedding path: ``atacformer embed``, the benchmark, the
    demo and experiments all call it, and by default it does what the model folder's config
    says (``pooling``, ``remove_depth``, ``l2_normalize``), so that one model and one input
    give one embedding whichever entry point made it.

    Parameters
    ----------
    adata
        Tokenized cells (columns = the model's regions), in memory or opened
        ``backed="r"``.
    model
        Any atacformer model (see :func:`atacformer.models.load_model`), or its folder.
    layer
        Read tokens from ``layers[layer]`` instead of ``X``.
    batch_size, device, max_length
        As in :func:`atacformer.models.embed_cells` (device: ``"cuda"``, ``"cpu"``, ...).
    pooling
        Override the model's pooling (Atacformer ``"mean"`` / ``"idf"``; masked-bin ``"cls"``
        / ``"mean"``).
    remove_depth
        Replace the embedding by its principal components minus the one that follows log
        depth (when ``|corr| > depth_corr_cutoff``), as LSI drops its first component.
        Default: the model's setting.
    l2_normalize
        Scale each cell to unit length last. Default: the model's setting.
    chunk_size
        Cells read from ``adata`` at once.
    out_path
        Write the raw embeddings to this ``.npy`` file (a memory map; ``obsm`` then refers
        to it) instead of holding them in RAM; post-processing is then skipped.
    progress
        Show a progress bar.
    key_added
        ``obsm`` key; ``uns[key_added]`` records the settings.
    modality
        ``"atac"`` (cells x regions) or, with a CRAFT model, ``"rna"``: RNA counts (cells x
        genes, matched to the model's genes by name) put into the same shared space as the
        ATAC cells.
    copy
        Work on a copy and return it.

    Returns
    -------
    AnnData or None
        The copy when ``copy=True``.

    Examples
    --------
    >>> from atacformer import tools as tl
    >>> tl.embed(adata, load_model("run/model"))        # doctest: +SKIP
    >>> adata.obsm["X_atacformer"].shape                 # doctest: +SKIP
    (533, 64)
    """
    from atacformer.models import embed_cells, load_model

    adata = adata.copy() if copy else adata
    if isinstance(model, (str, Path)):
        model = load_model(model)
    if modality not in ("atac", "rna"):
        raise ValueError(f"modality must be 'atac' or 'rna', got {modality!r}")
    if modality == "rna":
        _embed_rna(adata, model, layer, batch_size, device, progress, key_added)
        return adata if copy else None
    _check_columns(adata, model)
    settings = embedding_settings(model)
    pooling = pooling or settings["pooling"]
    remove_depth = settings["remove_depth"] if remove_depth is None else remove_depth
    l2_normalize = settings["l2_normalize"] if l2_normalize is None else l2_normalize
    X = _matrix(adata, layer)
    d = model.config.hidden_size
    n = adata.n_obs
    out = (np.lib.format.open_memmap(Path(out_path), mode="w+", dtype=np.float32, shape=(n, d))
           if out_path is not None else np.empty((n, d), np.float32))
    depth = np.empty(n, np.int64)
    starts = range(0, n, chunk_size)
    if progress and n > chunk_size:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="embedding chunks", unit="chunk")
    for s in starts:
        chunk = sp.csr_matrix(X[s: s + chunk_size])
        chunk.eliminate_zeros()
        depth[s: s + chunk.shape[0]] = np.diff(chunk.indptr)
        out[s: s + chunk.shape[0]] = embed_cells(model, chunk, batch_size=batch_size, device=device,
                                                 max_length=max_length, pooling=pooling,
                                                 progress=progress and n <= chunk_size)
    info = {"pooling": pooling or "default", "remove_depth": False, "l2_normalize": False, "dropped": []}
    if out_path is not None:
        out.flush()
    else:
        ok = np.isfinite(out).all(1)
        if remove_depth and ok.sum() > 2:
            coords, dropped = remove_depth_directions(out[ok], depth[ok], depth_corr_cutoff)
            full = np.full((n, coords.shape[1]), np.nan, np.float32)
            full[ok] = coords
            out, info["remove_depth"], info["dropped"] = full, True, dropped
        if l2_normalize:
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
            info["l2_normalize"] = True
    adata.obsm[key_added] = out
    adata.uns[key_added] = info
    logger.info("embedded %d cells into obsm[%r] (%d dims)", n, key_added, out.shape[1])
    return adata if copy else None


def _embed_rna(adata: AnnData, model, layer, batch_size, device, progress, key_added) -> None:
    from atacformer.models import CraftModel
    from atacformer.models.craft.inference import embed_rna_cells
    from atacformer.tools._craft import rna_counts

    if not isinstance(model, CraftModel):
        raise ValueError(f"modality='rna' needs a CRAFT model (atacformer craft), got {type(model).__name__}")
    X = rna_counts(adata, model.config.gene_names, layer)
    adata.obsm[key_added] = embed_rna_cells(model, X, batch_size=batch_size, device=device, progress=progress)
    adata.uns[key_added] = {"modality": "rna", "space": "craft", "n_genes": len(model.config.gene_names)}
    logger.info("embedded %d RNA cells into obsm[%r]", adata.n_obs, key_added)


def region_embeddings(
    model,
    adata: AnnData | None = None,
    *,
    cells=None,
    contextual: bool = False,
    attention: bool = False,
    key_added: str = "atacformer_regions",
) -> np.ndarray | dict:
    """Region (token) vectors of an Atacformer model.

    Parameters
    ----------
    model
        An Atacformer model (``AtacformerModel`` or ``...ForReplacedTokenDetection``).
    adata
        When given (columns = the model's regions), the static vectors are written to
        ``varm[key_added]``.
    cells
        Token-id arrays or a CSR of cells, for contextual vectors / attention maps.
    contextual
        Return each cell's final hidden state per token (needs ``cells``).
    attention
        Also return each layer's attention weights (heads averaged) per cell.

    Returns
    -------
    numpy.ndarray or dict
        Static: (n_regions, hidden) input embeddings. With ``contextual``: a dict with
        ``"static"``, ``"tokens"`` (one id array per cell), ``"hidden"`` (one (n_tok, D)
        array per cell) and, with ``attention``, ``"attention"`` (per cell, a
        (n_layers, n_tok, n_tok) array).

    Examples
    --------
    >>> vec = region_embeddings(model, adata)                      # doctest: +SKIP
    >>> out = region_embeddings(model, cells=adata.X[:2], contextual=True, attention=True)  # doctest: +SKIP
    """
    from atacformer.models import as_token_lists

    backbone = getattr(model, "atacformer", model)
    if not hasattr(backbone, "embeddings") or not hasattr(backbone.embeddings, "token_embeddings"):
        raise ValueError("region_embeddings needs an Atacformer model")
    static = backbone.embeddings.token_embeddings.weight[: model.config.n_regions].detach().cpu().numpy()
    if adata is not None:
        _check_columns(adata, model)
        adata.varm[key_added] = static
    if not (contextual or attention):
        return static
    if cells is None:
        raise ValueError("contextual vectors and attention maps need cells=")
    out = {"static": static, "tokens": [], "hidden": []}
    if attention:
        out["attention"] = []
    captured: list[torch.Tensor] = []

    def hook(mod, args):
        captured.append(args[0].detach())

    handles = [layer.self_attn.register_forward_pre_hook(hook) for layer in backbone.encoder.layers] \
        if attention else []
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for toks in as_token_lists(cells):
                captured.clear()
                ids = torch.as_tensor(toks, dtype=torch.long)[None]
                dev = next(model.parameters()).device
                h = backbone(ids.to(dev))  # (1, L, D)
                out["tokens"].append(toks)
                out["hidden"].append(h[0].float().cpu().numpy())
                if attention:
                    maps = []
                    for layer, x in zip(backbone.encoder.layers, captured):
                        a = layer.self_attn
                        q, k, _ = a.qkv(x).split(x.shape[-1], dim=-1)
                        qh, kh = a._heads(q), a._heads(k)  # (1, H, L, Dh)
                        w = torch.softmax(qh @ kh.transpose(-1, -2) / qh.shape[-1] ** 0.5, -1)
                        maps.append(w[0].mean(0).float().cpu().numpy())
                    out["attention"].append(np.stack(maps))
    finally:
        for hnd in handles:
            hnd.remove()
        model.train(was)
    return out
