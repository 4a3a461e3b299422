"""Cell embeddings from any atacformer model, and model folders of any kind."""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch

from atacformer.models._collate import as_token_lists

logger = logging.getLogger(__name__)


def embed_cells(model, cells, batch_size: int = 64, device=None, max_length: int | None = None,
                pooling: str | None = None, seed: int = 0, dtype: torch.dtype | None = None,
                progress: bool = False) -> np.ndarray:
    """Embed cells with an Atacformer or masked-bin model.

    Parameters
    ----------
    model
        :class:`AtacformerModel`, :class:`AtacformerForReplacedTokenDetection`,
        :class:`MaskedBinModel` or :class:`MaskedBinForPretraining` (e.g. from
        :func:`load_model`).
    cells
        Token-id arrays (one per cell) or a cells x regions CSR matrix tokenized with the
        model's vocabulary.
    batch_size
        Cells per forward pass. Cells are sorted by length first, so a batch holds cells of
        similar length and little padding is computed.
    device
        Where to run (the model is moved there); default: where the model is.
    max_length
        Context size (default: the model's); longer cells are randomly subsampled.
    pooling
        Atacformer: ``"mean"`` (mean of final hidden states over the cell's tokens) or
        ``"idf"`` (weighted by the training cells' IDF stored with a model built with
        ``pooling="idf"``). Masked-bin: ``"cls"`` (the ``<cls>`` output) or ``"mean"`` (mean
        over the sentence's bin tokens). Default: the model config's ``pooling``.
    seed
        Seed of the subsampling of long cells (embeddings are reproducible).
    dtype
        Autocast dtype (e.g. ``torch.bfloat16`` on a GPU); default: the model's dtype.
    progress
        Show a progress bar.
    Returns
    -------
    numpy.ndarray
        (n_cells, hidden) float32, in the order of ``cells``. A cell with no token gets a
        row of NaN.

    Examples
    --------
    >>> emb = embed_cells(load_model("path/to/model"), adata.X)   # doctest: +SKIP
    >>> adata.obsm["X_atacformer"] = emb                           # doctest: +SKIP
    """
    token_lists = as_token_lists(cells)
    n = len(token_lists)
    hidden = model.config.hidden_size
    out = np.empty((n, hidden), dtype=np.float32)
    if n == 0:
        return out
    if device is not None:
        model.to(device)
    dev = next(model.parameters()).device
    rng = np.random.default_rng(seed)
    lengths = np.array([len(t) for t in token_lists])
    order = np.argsort(-lengths, kind="stable")
    autocast = (torch.autocast(dev.type, dtype=dtype) if dtype is not None
                else contextlib.nullcontext())
    was_training = model.training
    model.eval()
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="embedding cells", unit="batch")
    try:
        with torch.inference_mode(), autocast:
            for s in starts:
                idx = order[s: s + batch_size]
                inputs = model.prepare_inputs([token_lists[i] for i in idx], max_length, rng)
                inputs = {k: v.to(dev, non_blocking=True) for k, v in inputs.items()}
                emb = model.embed(**inputs, pooling=pooling)
                out[idx] = emb.float().cpu().numpy()
    finally:
        model.train(was_training)
    empty = lengths == 0
    if empty.any():
        logger.warning("%d cell(s) have no token in the model's vocabulary; their embeddings are NaN",
                       int(empty.sum()))
        out[empty] = np.nan
    return out


def predict_label_probabilities(model, cells, batch_size: int = 64, device=None) -> np.ndarray:
    """(n_cells, n_labels) probabilities of a fine-tuned model's label head
    (:meth:`AtacformerForFinetuning.predict_proba`), columns in ``model.config.label_names``
    order. Every token of a cell is used up to the model's context (longer cells are
    subsampled with a fixed seed)."""
    if not getattr(model.config, "label_names", None) or not hasattr(model, "predict_proba"):
        raise ValueError("this model has no label head (fine-tune it with objective 'classify')")
    token_lists = as_token_lists(cells)
    n = len(token_lists)
    out = np.full((n, len(model.config.label_names)), np.nan, dtype=np.float32)
    if device is not None:
        model.to(device)
    dev = next(model.parameters()).device
    rng = np.random.default_rng(0)
    lengths = np.array([len(t) for t in token_lists])
    order = np.argsort(-lengths, kind="stable")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for s in range(0, n, batch_size):
                idx = order[s: s + batch_size]
                inputs = model.prepare_inputs([token_lists[i] for i in idx], None, rng)
                inputs = {k: v.to(dev) for k, v in inputs.items()}
                out[idx] = model.predict_proba(**inputs).float().cpu().numpy()
    finally:
        model.train(was_training)
    out[lengths == 0] = np.nan
    return out


def load_model(path_or_repo_id, *, map_location="cpu", merge_adapters: bool = False, **hub_kwargs):
    """Load any atacformer model folder, or a published geniml Atacformer checkpoint.

    The class is chosen from ``config.json``: this package's folders record
    ``model_type`` and ``architectures``; a geniml folder (``model_type`` "atacformer") loads
    as :class:`AtacformerForReplacedTokenDetection` when it holds the replaced-token head,
    else as the backbone :class:`AtacformerModel` (other geniml heads are dropped).

    Parameters
    ----------
    path_or_repo_id
        A local folder or a Hugging Face Hub id.
    map_location
        Device for the weights.
    merge_adapters
        A fine-tuned folder with LoRA adapters loads with them as separate layers (default)
        or folded into the backbone's weights (the same function, plain layers).
    **hub_kwargs
        ``revision``, ``cache_dir``, ``local_files_only``, ``token`` for Hub ids.

    Examples
    --------
    >>> model = load_model("databio/atacformer-base-hg38")   # doctest: +SKIP
    """
    from atacformer.models._pretrained import load_state_dict, read_config_json, resolve_model_dir
    from atacformer.models.atacformer.configuration_atacformer import AtacformerConfig
    from atacformer.models.atacformer.finetuning import AtacformerForFinetuning
    from atacformer.models.atacformer.modeling_atacformer import (
        AtacformerForProfileReconstruction, AtacformerForReplacedTokenDetection, AtacformerModel,
        is_geniml_config,
    )
    from atacformer.models.craft import CraftConfig, CraftModel
    from atacformer.models.get import GETConfig, GETForExpression, GETForMaskedRegions, GETModel
    from atacformer.models.dna_ranker import DnaRankerConfig, DnaRankerModel
    from atacformer.models.masked_bin.configuration_masked_bin import MaskedBinConfig
    from atacformer.models.masked_bin.modeling_masked_bin import MaskedBinForPretraining, MaskedBinModel
    from atacformer.models.multimodal.configuration_multimodal import MultimodalConfig
    from atacformer.models.multimodal.modeling_multimodal import (
        MultimodalForCellClassification, MultimodalForMaskedValues, MultimodalModel,
    )
    from atacformer.models.tosica import TosicaConfig, TosicaModel

    d = resolve_model_dir(path_or_repo_id, **hub_kwargs)
    meta = read_config_json(d)
    arch = (meta.get("architectures") or [None])[0]
    if is_geniml_config(meta):
        if arch is None:  # no record: look at the weights
            keys = load_state_dict(d).keys()
            rtd = any(k.startswith("discriminator.") for k in keys) and all(
                k.startswith(("atacformer.", "discriminator.")) for k in keys)
        else:
            rtd = arch == "AtacformerForReplacedTokenDetection"
        cls = AtacformerForReplacedTokenDetection if rtd else AtacformerModel
        return cls.from_pretrained(d, map_location=map_location)
    kinds = {
        AtacformerConfig.model_type: (AtacformerModel, AtacformerForFinetuning, AtacformerForProfileReconstruction,
                                      AtacformerForReplacedTokenDetection),
        MaskedBinConfig.model_type: (MaskedBinModel, MaskedBinForPretraining),
        CraftConfig.model_type: (CraftModel,),
        GETConfig.model_type: (GETModel, GETForMaskedRegions, GETForExpression),
        DnaRankerConfig.model_type: (DnaRankerModel,),
        MultimodalConfig.model_type: (MultimodalModel, MultimodalForCellClassification,
                                      MultimodalForMaskedValues),
        TosicaConfig.model_type: (TosicaModel,),
    }
    mt = meta.get("model_type")
    if mt not in kinds:
        raise ValueError(f"{d}/config.json: unknown model_type {mt!r}; expected one of "
                         f"{sorted(kinds)} or a geniml 'atacformer' folder")
    by_name = {c.__name__: c for c in kinds[mt]}
    cls = by_name.get(arch, kinds[mt][-1])
    model = cls.from_pretrained(d, map_location=map_location)
    if merge_adapters and getattr(model.config, "lora", None):
        model.merge_adapters()
    return model
