"""A :class:`TrainConfig` and a corpus -> the model to pretrain (and what it needs besides).

Besides the vocabulary, the masked-bin model may need: a region class per bin (``<eos>``
per region class, :mod:`atacformer.vocab.annotate`), a DNA embedding table, and integer
labels for its supervised heads (cell type, organ) from the corpus ``obs``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from atacformer.models import (
    AtacformerConfig, AtacformerForFinetuning, AtacformerForProfileReconstruction,
    AtacformerForReplacedTokenDetection, MaskedBinForPretraining,
)
from atacformer.train.config import FINETUNE_OBJECTIVES, TrainConfig
from atacformer.vocab import Vocabulary

logger = logging.getLogger(__name__)


@dataclass
class ModelInputs:
    """What a model is built from, besides its config.

    Attributes
    ----------
    vocab
        The corpus vocabulary (regions + special tokens).
    bin_classes, class_names
        Region class of every bin and the class names (``group_by="class"``), else None.
    dna
        (n_bins, d_dna) float32 DNA embedding table, or None.
    labels
        Integer codes over all corpus cells (-100 = unknown), by the name the batcher passes
        them under: ``cell_type`` / ``organ`` (masked-bin heads), ``labels`` /
        ``batch_labels`` (fine-tuning).
    n_classes, names
        Number of classes of each label, and their names (in code order).
    base_state
        The ``init_from`` model's weights (read once per run), else None.
    sample
        Cells x regions CSR of the training cells (all of them, or a seeded sample of
        :data:`STATS_CELLS`) when a switch needs data statistics (token frequencies, IDF,
        LSI loadings), else None.
    """

    vocab: Vocabulary
    bin_classes: np.ndarray | None = None
    class_names: list[str] | None = None
    dna: np.ndarray | None = None
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    n_classes: dict[str, int] = field(default_factory=dict)
    names: dict[str, list[str]] = field(default_factory=dict)
    sample: object = None
    base_state: dict | None = None

    def open_fraction(self) -> np.ndarray:
        """(n_regions,) fraction of the sampled cells in which each region is open."""
        df = np.bincount(self.sample.indices, minlength=self.vocab.n_regions)[: self.vocab.n_regions]
        return df / max(self.sample.shape[0], 1)


#: Most cells read for data statistics (frequencies, IDF, LSI loadings).
STATS_CELLS = 100_000


def _needs_statistics(cfg: TrainConfig) -> bool:
    return cfg.model == "atacformer" and (cfg.objective in ("profile", "batch-adversarial")
                                          or cfg.replacement == "frequency" or bool(cfg.lsi_init)
                                          or cfg.pooling == "idf")


def statistics_sample(corpus, seed: int) -> "sp.csr_matrix":
    """The cells data statistics are computed from: all, or a seeded sample of
    :data:`STATS_CELLS` (binary CSR, cells x regions)."""
    import scipy.sparse as sp

    n = len(corpus)
    idx = np.arange(n) if n <= STATS_CELLS else np.sort(
        np.random.default_rng(seed).choice(n, STATS_CELLS, replace=False))
    parts = [corpus.get_rows(idx[s: s + 8192]) for s in range(0, len(idx), 8192)]
    X = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, corpus.vocab.n_regions))
    X.eliminate_zeros()
    X.data = np.ones_like(X.data, dtype=np.float32)
    return X


def load_dna_table(path, n_bins: int) -> np.ndarray:
    """A per-bin DNA embedding table from ``.npy`` (or the first array of an ``.npz``)."""
    arr = np.load(path)
    if hasattr(arr, "files"):
        arr = arr[arr.files[0]]
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] < n_bins:
        raise ValueError(f"{path}: DNA embedding table has shape {arr.shape}; expected ({n_bins}, d), "
                         "one row per vocabulary region in token-id order")
    return arr[:n_bins]


def model_inputs(cfg: TrainConfig, corpus) -> ModelInputs:
    """Gather the vocabulary, region classes, DNA table and labels a run's model needs."""
    mi = ModelInputs(vocab=corpus.vocab)
    if _needs_statistics(cfg):
        mi.sample = statistics_sample(corpus, cfg.seed)
    if cfg.init_from:
        from atacformer.models import load_model

        mi.base_state = load_model(cfg.init_from).state_dict()
    if cfg.objective in FINETUNE_OBJECTIVES:
        wanted = [("batch_labels", cfg.batch_key)] if cfg.objective == "batch-adversarial" else \
            [("labels", cfg.label_key)]
        for name, key in wanted:
            mi.labels[name], mi.names[name] = finetune_labels(corpus, key)
            mi.n_classes[name] = len(mi.names[name])
            logger.info("fine-tuning on obs[%r]: %d classes", key, len(mi.names[name]))
    if cfg.model != "masked-bin":
        return mi
    if cfg.group_by == "class":
        from atacformer.vocab.annotate import annotate_regions

        mi.bin_classes, mi.class_names = annotate_regions(corpus.vocab, tss=cfg.tss, genes=cfg.genes)
        counts = np.bincount(mi.bin_classes, minlength=len(mi.class_names))
        logger.info("region classes: %s", dict(zip(mi.class_names, counts.tolist())))
    if cfg.dna_embeddings:
        mi.dna = load_dna_table(cfg.dna_embeddings, corpus.vocab.n_regions)
    if cfg.supervised:
        for name, key in (("cell_type", cfg.label_key), ("organ", cfg.organ_key)):
            found = corpus.obs_codes(key)
            if found is not None:
                mi.labels[name], names = found
                mi.n_classes[name] = len(names)
                logger.info("supervised %s head on obs[%r]: %d classes", name, key, len(names))
        if not mi.labels:
            raise ValueError(f"supervised=True but no corpus has obs[{cfg.label_key!r}] or "
                             f"obs[{cfg.organ_key!r}] labels")
    return mi


def finetune_labels(corpus, key: str) -> tuple[np.ndarray, list[str]]:
    """Codes and names of ``obs[key]`` over the corpus cells, with clear errors for a missing
    column, no known value, or a single class."""
    found = corpus.obs_codes(key)
    if found is None:
        cols = sorted({c for part in corpus.corpora for c in part.obs.columns})
        raise KeyError(f"no training cell has obs[{key!r}] (columns: {cols}); pass the labels column with "
                       "--labels-key / --batch-key")
    codes, names = found
    missing = int((codes < 0).sum())
    if missing:
        logger.warning("obs[%r] is missing for %d of %d cells; they are left out of this loss", key, missing,
                       len(codes))
    if len(names) < 2:
        raise ValueError(f"obs[{key!r}] has {len(names)} class(es) ({names}); fine-tuning needs at least 2")
    return codes, names


def _transfer_base_weights(model, base_state: dict) -> None:
    """Copy the base model's weights into ``model`` where name and shape match (a LoRA
    layer's ``base_layer`` takes the plain layer's weights); what is new stays initialised."""
    own = model.state_dict()
    taken, new = {}, []
    for k, v in own.items():
        src = k.replace(".base_layer", "")
        if src in base_state and base_state[src].shape == v.shape:
            taken[k] = base_state[src]
        elif "lora_" not in k:
            new.append(k)
    model.load_state_dict(taken, strict=False)
    dropped = sorted(set(base_state) - {k.replace(".base_layer", "") for k in taken})
    if new:
        logger.info("newly initialised (not in the base model): %s", new)
    if dropped:
        logger.info("base model weights not used: %s", dropped)
    if not any(k.startswith("atacformer.") for k in taken):
        raise ValueError("no backbone weight of the base model fits this model")


def _freeze(model, cfg: TrainConfig) -> None:
    """LoRA: only adapters and heads train; ``freeze_layers=N``: only the last N encoder
    layers, the final norms and the heads."""
    backbone = model.atacformer
    if cfg.lora_rank:
        for name, p in backbone.named_parameters():
            p.requires_grad = "lora_" in name
    elif cfg.freeze_layers is not None:
        layers = backbone.encoder.layers
        n = min(cfg.freeze_layers, len(layers))
        frozen = [backbone.embeddings, *layers[: len(layers) - n]]
        for module in frozen:
            for p in module.parameters():
                p.requires_grad = False
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    if n_train < n_all:
        logger.info("training %d of %d parameters (%.2f%%)", n_train, n_all, 100 * n_train / max(n_all, 1))


def build_model(cfg: TrainConfig, mi: ModelInputs, seed: int | None = None):
    """A freshly initialised pretraining model (on CPU, in fp32).

    Parameters
    ----------
    cfg
        A resolved :class:`TrainConfig`.
    mi
        From :func:`model_inputs`.
    seed
        Seeds the initialisation (every rank builds the same weights).
    """
    if seed is not None:
        torch.manual_seed(seed)
    kw = cfg.model_kwargs()
    if cfg.model == "atacformer":
        cls = {"profile": AtacformerForProfileReconstruction, "rtd": AtacformerForReplacedTokenDetection}.get(
            cfg.objective, AtacformerForFinetuning)
        if "labels" in mi.names:
            kw["label_names"] = list(mi.names["labels"])
        if "batch_labels" in mi.names:
            kw["batch_names"] = list(mi.names["batch_labels"])
        if cfg.init_from:
            base = cfg.base_config()
            if base.vocab_size != len(mi.vocab):
                raise ValueError(f"{cfg.init_from}: the base model has {base.vocab_size:,} tokens but the "
                                 f"training vocabulary {len(mi.vocab):,}")
            config = base.replace(**kw)
        else:
            config = AtacformerConfig.for_vocab(mi.vocab, **kw)
        model = cls(config, vocab=mi.vocab)
        if mi.sample is not None:
            initialise_from_data(model, cfg, mi)
        if mi.base_state is not None:
            _transfer_base_weights(model, mi.base_state)
        if getattr(model, "classifier", None) is not None and model.config.balanced and "labels" in mi.labels:
            codes = mi.labels["labels"]
            counts = np.bincount(codes[codes >= 0], minlength=len(model.config.label_names)).astype(np.float64)
            w = counts.sum() / (len(counts) * np.maximum(counts, 1.0))  # sklearn's "balanced" weights
            model.label_weights.copy_(torch.as_tensor(w, dtype=torch.float32))
        if isinstance(model, AtacformerForFinetuning) or cfg.init_from:
            _freeze(model, cfg)
        return model
    kw.setdefault("num_cell_types", mi.n_classes.get("cell_type", 0))
    kw.setdefault("num_organs", mi.n_classes.get("organ", 0))
    return MaskedBinForPretraining.from_vocab(mi.vocab, bin_classes=mi.bin_classes, class_names=mi.class_names,
                                              dna_embeddings=mi.dna, **kw)


def initialise_from_data(model, cfg: TrainConfig, mi: ModelInputs) -> None:
    """Data-derived starting values: the IDF pooling weights, the profile decoder's bias
    (log-odds of each region's open fraction) and, with ``lsi_init``, the token table from
    LSI region loadings. Deterministic given the data and ``cfg.seed``."""
    from atacformer.models import idf_weights, init_embeddings_from_lsi

    backbone = model.atacformer
    frac = mi.open_fraction()
    if hasattr(backbone, "token_idf"):
        backbone.token_idf.copy_(torch.from_numpy(idf_weights(mi.sample, model.config.vocab_size)))
    if getattr(model, "decoder_bias", None) is not None and model.config.decoder_bias_init:
        model.init_decoder_bias(frac, np.diff(mi.sample.indptr))
    if cfg.lsi_init:
        init_embeddings_from_lsi(model, mi.sample, seed=cfg.seed, n_components=cfg.lsi_components,
                                 offset=cfg.lsi_offset or 0.0)


def token_probabilities(mi: ModelInputs) -> np.ndarray:
    """Replacement distribution of ``replacement="frequency"`` (corpus token frequencies)."""
    from atacformer.models import token_frequencies

    return token_frequencies(mi.sample)


def describe(model) -> str:
    """One line: class, parameter count, main sizes."""
    n = sum(p.numel() for p in model.parameters())
    c = model.config
    return (f"{type(model).__name__}: {n / 1e6:.2f}M parameters, d={c.hidden_size}, "
            f"{c.num_layers} layers, context {c.max_length}")


def save_json(path: Path, obj) -> None:
    """Write JSON atomically."""
    import json
    import os

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)
