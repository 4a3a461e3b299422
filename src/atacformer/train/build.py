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
import scipy.sparse as sp
import torch

from atacformer.models import (
    AtacformerConfig, AtacformerForFinetuning, AtacformerForProfileReconstruction,
    AtacformerForReplacedTokenDetection, MaskedBinForPretraining,
)
from atacformer.train.config import FINETUNE_OBJECTIVES, PAIRED_OBJECTIVES, TrainConfig
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
    cell_mask
        (n_cells,) bool: the corpus cells to train on (``craft``: paired with RNA and not
        excluded), else None (all).
    rna_medians
        ``craft``: each gene's non-zero median over the trainable cells (rank encoding).
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
    cell_mask: np.ndarray | None = None
    rna_medians: np.ndarray | None = None

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


def model_inputs(cfg: TrainConfig, corpus, rna=None) -> ModelInputs:
    """Gather the vocabulary, region classes, DNA table, labels and paired RNA a run's model
    needs (``rna``: an in-memory RNA AnnData instead of ``cfg.rna``)."""
    mi = ModelInputs(vocab=corpus.vocab)
    if _needs_statistics(cfg):
        mi.sample = statistics_sample(corpus, cfg.seed)
    if cfg.init_from:
        from atacformer.models import load_model

        base = load_model(cfg.init_from)
        prefix = "" if not getattr(base, "is_base_model", False) else "atacformer."
        mi.base_state = {prefix + k: v for k, v in base.state_dict().items()}
    if cfg.objective in PAIRED_OBJECTIVES:
        paired_rna(cfg, corpus, mi, rna)
    if cfg.objective == "multimodal":
        paired_gene_activity(cfg, corpus, mi)
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


def paired_rna(cfg: TrainConfig, corpus, mi: ModelInputs, rna=None) -> None:
    """The RNA counts of the corpus cells (``mi.labels["rna"]``), their genes, the cells to
    train on and the genes' non-zero medians. With ``rna_base``, genes outside its token
    dictionary are left out."""
    from atacformer.models.craft import gene_nonzero_medians
    from atacformer.train.paired import align_rna, corpus_cell_names, excluded_cells, read_rna

    adata = read_rna(rna if rna is not None else cfg.rna)
    if cfg.rna_base:
        from atacformer.models.craft import load_token_dictionary

        tokens = load_token_dictionary(cfg.rna_base)
        keys = gene_key_values(adata, tokens)
        known = np.array([k in tokens for k in keys], dtype=bool)
        if not known.any():
            raise ValueError(f"{cfg.rna_base}: no gene of the RNA data (e.g. {list(adata.var_names[:3])}) is in "
                             "the checkpoint's token dictionary (by name or by a var 'gene_ids' column)")
        logger.info("%d of %d genes are in the RNA checkpoint's vocabulary", int(known.sum()), adata.n_vars)
        adata = adata[:, known]
    X, mask = align_rna(corpus_cell_names(corpus), adata, excluded_cells(cfg.exclude_cells))
    if not mask.any():
        raise ValueError("no training cell has an RNA partner (cells are paired by obs_names)")
    mi.labels["rna"] = X
    mi.names["rna_genes"] = [str(g) for g in adata.var_names]
    mi.cell_mask = mask
    mi.rna_medians = gene_nonzero_medians(X[np.flatnonzero(mask)])
    if cfg.rna_base:
        mi.names["rna_gene_keys"] = [str(k) for k, hit in zip(keys, known) if hit]


def paired_gene_activity(cfg: TrainConfig, corpus, mi: ModelInputs) -> None:
    """The corpus cells' gene activity (:func:`atacformer.preprocessing.gene_activity` over
    their regions, genes of ``cfg.genes``) as ``mi.labels["gene_activity"]``; both modalities
    are cut to the genes they share (by name)."""
    import anndata as ad
    import pandas as pd

    from atacformer.preprocessing import gene_activity

    X = sp.vstack([corpus.get_rows(np.arange(s, min(s + 8192, len(corpus))))
                   for s in range(0, len(corpus), 8192)], format="csr")
    regions = corpus.vocab.to_dataframe()
    var = pd.DataFrame({"chrom": regions["chrom"].astype(str).to_numpy(), "start": regions["start"].to_numpy(),
                        "end": regions["end"].to_numpy()}, index=[f"r{i}" for i in range(len(regions))])
    ga = gene_activity(ad.AnnData(X=X, var=var), cfg.genes, genome=cfg.genome)
    names = pd.Index(mi.names["rna_genes"])
    shared = names[names.isin(ga.var_names)]
    if len(shared) == 0:
        raise ValueError(f"no RNA gene (e.g. {list(names[:3])}) is named in the gene annotation {cfg.genes} "
                         f"(e.g. {list(ga.var_names[:3])})")
    logger.info("multimodal: %d of %d RNA genes have gene activity", len(shared), len(names))
    mi.labels["rna"] = sp.csr_matrix(mi.labels["rna"][:, names.get_indexer(shared)])
    mi.labels["gene_activity"] = sp.csr_matrix(ga[:, shared].X, dtype=np.float32)
    mi.names["rna_genes"] = [str(g) for g in shared]


#: The multimodal model's architecture on a CPU (hidden 64, two layers, the 256 highest genes of a cell).
MULTIMODAL_CPU = dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, max_genes=256, dropout=0.0)


def build_multimodal(cfg: TrainConfig, mi: ModelInputs):
    """The gene-level multimodal model, its value bins fitted on the trainable cells."""
    from atacformer.models import MultimodalConfig, MultimodalForMaskedValues

    genes = mi.names["rna_genes"]
    train = np.flatnonzero(mi.cell_mask)
    kw = {**MULTIMODAL_CPU, **cfg.model_overrides}
    if cfg.mask_ratio is not None:
        kw["mask_ratio"] = float(cfg.mask_ratio)
    config = MultimodalConfig(n_genes=len(genes), gene_names=list(genes), **kw).with_value_bins(
        rna=mi.labels["rna"][train], atac=mi.labels["gene_activity"][train])
    return MultimodalForMaskedValues(config)


def _gene_id_columns(adata) -> list:
    return [c for c in ("gene_ids", "gene_id", "ensembl_id") if c in adata.var.columns]


def gene_key_values(adata, tokens: dict) -> list:
    """Each gene's key in a token dictionary: its name when known, else its id column's value."""
    out = list(map(str, adata.var_names))
    for col in _gene_id_columns(adata):
        ids = adata.var[col].astype(str).to_numpy()
        out = [n if n in tokens else (i if i in tokens else n) for n, i in zip(out, ids)]
    return out


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
    if cfg.objective == "multimodal":
        return build_multimodal(cfg, mi)
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
        if cfg.objective in PAIRED_OBJECTIVES:
            return build_craft(cfg, mi, config)
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


#: The RNA encoder CRAFT builds when no checkpoint is given: small enough for a CPU (with d 128 and
#: two layers a step of 128 sci-CAR cells, ~540 gene tokens each, took 7x longer).
RNA_ENCODER_DEFAULTS = dict(hidden_size=64, num_layers=1, num_heads=4, intermediate_size=128, activation="relu",
                            dropout=0.0, layer_norm_eps=1e-12)
MAX_GENES = 2048


def build_craft(cfg: TrainConfig, mi: ModelInputs, atac_config: AtacformerConfig):
    """A CRAFT model: the ATAC encoder of ``atac_config`` (with the ``init_from`` weights) and
    an RNA encoder from ``rna_base`` or newly initialised over the training genes."""
    from atacformer.models.craft import RNA_SPECIAL_TOKENS, CraftConfig, CraftModel, load_bert_checkpoint

    genes = mi.names["rna_genes"]
    medians = mi.rna_medians
    state = None
    if cfg.rna_base:
        rna_kw, state, tokens, ckpt_medians = load_bert_checkpoint(cfg.rna_base)
        keys = mi.names["rna_gene_keys"]
        token_ids = [int(tokens[k]) for k in keys]
        if ckpt_medians:  # the checkpoint's own normalisation where it has one
            medians = np.array([float(ckpt_medians.get(k, m)) for k, m in zip(keys, medians)])
        n_special = 1 if rna_kw["cls_token_id"] is not None else 0
        max_genes = min(MAX_GENES, rna_kw["max_positions"] - n_special)
    else:
        n_special = len(RNA_SPECIAL_TOKENS)
        token_ids = list(range(n_special, n_special + len(genes)))
        max_genes = min(MAX_GENES, len(genes))
        rna_kw = dict(RNA_ENCODER_DEFAULTS, vocab_size=n_special + len(genes), max_positions=max_genes + 1,
                      pad_token_id=RNA_SPECIAL_TOKENS.index("<pad>"), cls_token_id=RNA_SPECIAL_TOKENS.index("<cls>"))
    config = CraftConfig(atac=atac_config.to_dict(), rna=rna_kw, gene_names=list(genes), gene_token_ids=token_ids,
                         max_genes=max_genes)
    model = CraftModel(config, vocab=mi.vocab)
    model.gene_medians.copy_(torch.as_tensor(medians, dtype=torch.float64))
    if state is not None:
        model.rna_encoder.load_state_dict(state)
    if mi.base_state is not None:
        _transfer_base_weights(model, mi.base_state)
    return model


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
    if hasattr(c, "gene_names") and hasattr(c, "n_bins"):  # the multimodal model
        return (f"{type(model).__name__}: {n / 1e6:.2f}M parameters, d={c.hidden_size}, {c.num_layers} layers, "
                f"{c.n_genes} genes, {c.max_genes} per cell, {c.n_bins} value bins")
    if hasattr(model, "rna_encoder"):  # CRAFT: the two towers
        a, r = c.atac, c.rna
        return (f"{type(model).__name__}: {n / 1e6:.2f}M parameters; ATAC d={a['hidden_size']}, "
                f"{a['num_layers']} layers, context {a['max_length']}; RNA d={r['hidden_size']}, {r['num_layers']} "
                f"layers, {c.max_genes} genes; shared space {c.projection_dim}")
    if not all(hasattr(c, k) for k in ("hidden_size", "num_layers", "max_length")):  # a task's own model
        return f"{type(model).__name__}: {n / 1e6:.2f}M parameters"
    return (f"{type(model).__name__}: {n / 1e6:.2f}M parameters, d={c.hidden_size}, "
            f"{c.num_layers} layers, context {c.max_length}")


def save_json(path: Path, obj) -> None:
    """Write JSON atomically."""
    import json

    from atacformer.io._atomic import write_text_atomic

    write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")
