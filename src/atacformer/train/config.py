"""The settings of one pretraining run, and the presets that fill in what is not given.

A :class:`TrainConfig` is everything that defines a run: the model and its switches, the
data and how it is batched, the optimisation and the systems settings. Fields left ``None``
take the value of the chosen preset (``debug``, ``small``, ``base``) when the run starts
(:meth:`TrainConfig.resolved`). A resolved config is written to ``OUT/train_config.json``;
``--resume`` reads it back and refuses flags that would change the run (see
:data:`RESUMABLE_FIELDS` for what may change between the pieces of one run).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atacformer.train.task import TASK_MODELS

MODELS = ("atacformer", "masked-bin")
#: Pretraining objectives, then fine-tuning objectives (these start from ``init_from``).
PRETRAINING_OBJECTIVES = ("rtd", "profile")
FINETUNE_OBJECTIVES = ("triplet", "classify", "batch-adversarial")
#: Objectives on paired RNA + ATAC cells (the RNA side comes from ``rna``).
PAIRED_OBJECTIVES = ("craft", "multimodal")
OBJECTIVES = PRETRAINING_OBJECTIVES + FINETUNE_OBJECTIVES + PAIRED_OBJECTIVES
PRESETS = ("cpu", "debug", "small", "base")

#: Model architecture per preset (fields of AtacformerConfig / MaskedBinConfig). ``base`` is
#: the published shape: Atacformer's config defaults (d 384, 6 layers, context 8,192) and
#: the masked-bin model of Ge 2025 (d 512, 12 layers, k 64, sentences of 6,800). ``debug`` has no
#: dropout: on CPU, attention dropout forces SDPA's math kernel and costs 10x the step time.
MODEL_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "atacformer": {
        # measured on 2 CPU cores: a pooled bag of region embeddings (no attention layer) learns the
        # most per minute; --preset small / base add transformer layers for GPU runs
        "cpu": dict(hidden_size=128, num_layers=0, num_heads=4, intermediate_size=256, max_length=4096,
                    dropout=0.0, cell_norm=True, initializer_range=0.125),
        "debug": dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_length=512,
                      dropout=0.0),
        "small": dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024, max_length=2048),
        "base": dict(hidden_size=384, num_layers=6, num_heads=8, intermediate_size=1536, max_length=8192),
    },
    "masked-bin": {
        "cpu": dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, embedding_dim=32,
                    decoder_dim=32, decoder_hidden_size=64, max_length=1024, dropout=0.0),
        "debug": dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, embedding_dim=16,
                      decoder_dim=16, decoder_hidden_size=32, max_length=1024, dropout=0.0),
        "small": dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024, embedding_dim=64,
                      decoder_dim=64, decoder_hidden_size=128, max_length=2048),
        "base": dict(hidden_size=512, num_layers=12, num_heads=8, intermediate_size=2048, embedding_dim=64,
                     decoder_dim=64, decoder_hidden_size=128, max_length=6800),
    },
}

#: The cpu preset's encoder for replaced-token detection, whose per-token head can only spot
#: a replacement through attention to the cell's other tokens.
CPU_RTD: dict[str, Any] = dict(num_layers=2, max_length=512, cell_norm=False)

#: Optimisation per preset; ``batch_size`` is cells per optimizer step over all ranks.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # cpu: steps sized from the data (``epochs`` passes) and capped by ``time_budget`` minutes
    "cpu": dict(batch_size=128, lr=2e-3, warmup_steps=50, max_steps=None, save_every=500, epochs=20.0,
                min_steps=1500, time_budget=12.0),
    "debug": dict(batch_size=16, lr=1e-3, warmup_steps=10, max_steps=100, save_every=50),
    "small": dict(batch_size=64, lr=5e-4, warmup_steps=500, max_steps=20_000, save_every=1000),
    "base": dict(batch_size=256, lr=3e-4, warmup_steps=2000, max_steps=200_000, save_every=2000),
}

#: Named sets of objective and quality switches (``--recipe``); a field the user sets wins.
#: Every recipe can be run with ``max_steps=0`` to get its own untrained starting point.
RECIPES: dict[str, dict[str, Any]] = {
    # whole-profile reconstruction through the pooled cell vector (the default)
    "profile": dict(objective="profile", mask_ratio=0.5, pooling="idf", remove_depth=False, l2_normalize=True),
    # geniml's ELECTRA objective as published: uniform replacements, mean pooling
    "rtd": dict(objective="rtd", replacement="uniform", pooling="mean", remove_depth=False,
                l2_normalize=False),
    # replacements drawn from corpus frequencies, so that rarity alone does not give them away
    "rtd-frequency": dict(objective="rtd", replacement="frequency", pooling="mean", remove_depth=True,
                          l2_normalize=True),
    # plus a two-view InfoNCE term on pooled cells and IDF-weighted pooling
    "rtd-contrastive": dict(objective="rtd", replacement="frequency", contrastive=1.0, pooling="idf",
                            remove_depth=True, l2_normalize=True),
    # token table initialised from LSI region loadings, trained slowly
    "lsi-init-contrastive": dict(objective="rtd", replacement="frequency", contrastive=1.0, lsi_init=True,
                                 embedding_lr_scale=0.1, pooling="idf", remove_depth=True, l2_normalize=True),
    # LSI loadings in 30 dims plus a constant block that keeps LayerNorm from rescaling tokens
    "lsi-offset-contrastive": dict(objective="rtd", replacement="frequency", contrastive=1.0, lsi_init=True,
                                   lsi_components=30, lsi_offset=2.0, embedding_lr_scale=0.1, pooling="idf",
                                   remove_depth=False, l2_normalize=True),
    # the LSI-initialised profile model
    "lsi-init-profile": dict(objective="profile", mask_ratio=0.5, lsi_init=True, embedding_lr_scale=0.1,
                             pooling="mean", remove_depth=False, l2_normalize=True),
}
#: Values of recipe fields no recipe and no user sets.
RECIPE_DEFAULTS: dict[str, Any] = dict(objective="rtd", replacement="uniform", contrastive=0.0, lsi_init=False,
                                       lsi_components=None, lsi_offset=0.0, embedding_lr_scale=1.0,
                                       pooling=None, remove_depth=None, l2_normalize=None)
DEFAULT_RECIPE = "profile"

#: Optimisation defaults of a fine-tuning run (over the preset's): 10 passes over the labelled
#: cells but at least 300 steps (a few hundred labelled cells make 3 steps a pass; the label
#: head measured macro-F1 0.48 after 30 steps on Schep 2017 and 0.66 after 120); the learning
#: rate stays the preset's (2e-3 measured best on Granja 2019 for triplet fine-tuning, against
#: 5e-4 and 5e-3).
FINETUNE_TRAIN: dict[str, Any] = dict(epochs=10.0, min_steps=300, warmup_steps=20)

#: Optimisation defaults of CRAFT (over the preset's): contrastive pairs of a few thousand cells
#: need many passes; 1e-3 keeps the freshly initialised RNA encoder stable.
CRAFT_TRAIN: dict[str, Any] = dict(epochs=40.0, min_steps=300, warmup_steps=30, lr=1e-3)

#: Fields that may differ between the pieces of one resumed run (they do not change the
#: numbers a step computes).
RESUMABLE_FIELDS = frozenset({"max_steps", "epochs", "min_steps", "time_budget", "save_every", "keep_checkpoints",
                              "log_every", "progress", "tensorboard", "num_workers", "resume", "overwrite", "data",
                              "out", "grad_accum", "device", "compile", "activation_checkpointing", "parallel"})

_CHOICES = {
    "model": MODELS + TASK_MODELS, "preset": PRESETS, "context": ("random", "first"), "order": ("genomic", "shuffled"),
    "batching": ("bucket", "padded"), "precision": ("auto", "bf16", "fp32"), "parallel": ("ddp", "fsdp"),
    "group_by": ("chromosome", "class"),
}
_OPTIONAL_CHOICES = {"objective": OBJECTIVES, "replacement": ("uniform", "frequency"),
                     "recipe": tuple(RECIPES), "pooling": ("mean", "idf", "cls")}
_TRIPLET_MINING = ("batch-hard", "semi-hard", "random")


@dataclass
class TrainConfig:
    """Settings of a pretraining run (``atacformer pretrain --help`` documents each flag).

    Parameters
    ----------
    model
        ``"atacformer"`` (region tokens, an encoder, a pooled cell; Atacformer of LeRoy 2025)
        or ``"masked-bin"`` (the masked-bin model with per-group ``<eos>`` decoding).
    recipe
        A named set of the switches below (:data:`RECIPES`; default ``"profile"`` for
        Atacformer); any switch set explicitly wins over the recipe's.
    objective
        Atacformer: ``"profile"`` (reconstruct the cell's whole profile from its pooled
        vector, :class:`~atacformer.models.AtacformerForProfileReconstruction`) or ``"rtd"``
        (replaced-token detection, geniml's objective); fine-tuning
        (:class:`~atacformer.models.AtacformerForFinetuning`): ``"triplet"``,
        ``"classify"`` or ``"batch-adversarial"``; paired RNA + ATAC: ``"craft"``
        (:class:`~atacformer.models.CraftModel`) or ``"multimodal"`` (the gene-level model,
        :class:`~atacformer.models.MultimodalForMaskedValues`, on RNA counts and the ATAC
        cells' gene activity over the genes of ``genes``).
    init_from
        Start from this model folder (ours, or a geniml Atacformer folder): its architecture,
        vocabulary (the data is tokenized into it), weights and embedding settings. With a
        pretraining objective this is continued pretraining; with a fine-tuning objective,
        fine-tuning. Heads the folder lacks are newly initialised.
    label_key, batch_key
        ``obs`` columns of the fine-tuning labels (``triplet``, ``classify``) and of the
        batches (``batch-adversarial``). Cells whose value is missing are left out of that
        loss.
    balanced
        ``classify``: weight each label's loss by its inverse frequency (every label counts
        alike, as macro-F1 does); False: plain cross-entropy.
    triplet_margin, triplet_mining
        ``triplet``: the margin of ``TripletMarginLoss(p=2)`` and the mining
        (``batch-hard``, ``semi-hard``, ``random``).
    adversarial_weight, reversal_strength
        ``batch-adversarial``: weight of the batch classifier's loss and the gradient
        reversal factor.
    lora_rank, lora_alpha, lora_dropout, lora_targets
        LoRA adapters (``peft``) on the backbone, rank > 0 to enable (alpha default 2 x
        rank; targets default: the attention and feed-forward projections, or the token
        table of an encoder without layers); the backbone's own weights are frozen.
    rna, rna_base, exclude_cells
        ``craft``: the RNA counts (``.h5ad``, cells paired with the ATAC cells by
        ``obs_names``), a local BERT / Geneformer checkpoint folder to start the RNA encoder
        from (default: trained from scratch), and a file of cell names (one per line) never
        trained on (held out for evaluation).
    freeze_layers
        Train only the last N encoder layers (the token table and earlier layers are
        frozen; 0: only the heads and the cell LayerNorm train).
    replacement
        ``rtd``: replacement tokens drawn ``"uniform"`` ly or by corpus ``"frequency"``.
    contrastive, temperature
        ``rtd``: weight of a two-view InfoNCE term on pooled cells (0 = off), its temperature.
    lsi_init, lsi_components, lsi_offset, embedding_lr_scale
        Initialise the token table from LSI region loadings of the training cells (in
        ``lsi_components`` dims, the rest set to ``lsi_offset`` when non-zero), and scale
        the token table's learning rate.
    pooling, remove_depth, l2_normalize
        Embedding settings saved in the exported model (see :func:`atacformer.tools.embed`).
    data
        Inputs: corpus folders, fragments files, ``.h5ad`` peak matrices (several allowed).
    out
        Output folder (metrics, checkpoints, the exported model).
    preset
        ``debug``, ``small`` or ``base``: model size and optimisation defaults.
    bins, universe, genome
        Vocabulary for inputs that are not a corpus: fixed bins, a BED universe, the genome.
        Without both, a corpus's vocabulary or the first ``.h5ad``'s peaks are used.
    max_length
        Context (tokens per cell sentence); default: the preset's.
    model_overrides
        Other model config fields (``{"dropout": 0.0, "decoder": "cross_attention"}``).
    mask_ratio
        Masked-bin: fraction of open bins removed; Atacformer: replacement probability.
    group_by, tss, genes
        Masked-bin ``<eos>`` groups: chromosomes, or region classes annotated from a TSS BED
        and/or a genes BED (:func:`atacformer.vocab.annotate.annotate_regions`).
    dna_embeddings
        ``.npy`` table (n_bins x d_dna) of per-bin DNA embeddings (masked-bin).
    supervised, organ_key
        Masked-bin supervised heads on ``<cls>``, trained on ``obs[label_key]`` (cell type)
        and ``obs[organ_key]`` when present.
    context, order
        Longer cells: a ``random`` subset or the ``first`` C tokens; tokens in ``genomic``
        or ``shuffled`` order.
    batching, bucket_window
        ``bucket``: cells sorted by length within windows of ``bucket_window`` batches, so
        batches hold cells of similar length (little padding); ``padded``: random batches
        padded to their longest cell (the baseline).
    block_size
        Shuffle blocks of this many consecutive corpus cells (longer contiguous reads).
    num_workers
        Data-loader worker processes per rank (they read and collate whole micro-batches).
    max_steps, batch_size, grad_accum
        Optimizer steps (0: export the initialised model unchanged); cells per step over all
        ranks; micro-batches per step and rank.
    epochs, min_steps, time_budget
        Without ``max_steps``: train ``epochs`` passes over the cells but at least
        ``min_steps`` steps (small sets need more passes), and stop the plan at what fits in
        ``time_budget`` minutes (measured on the first steps; the ``cpu`` preset's default).
    lr, min_lr_ratio, warmup_steps, weight_decay, beta1, beta2, eps, max_grad_norm
        AdamW with linear warmup then cosine decay to ``min_lr_ratio * lr``; gradient
        clipping by global norm (0 = off).
    precision
        ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``bf16`` or ``fp32``.
    compile, activation_checkpointing, parallel
        ``torch.compile`` of each transformer block; recompute blocks in the backward pass;
        ``ddp`` or ``fsdp`` (FSDP2 ``fully_shard``) under ``torchrun``.
    device
        ``cpu``, ``cuda``... (default: the local CUDA device when there is one).
    save_every, keep_checkpoints, log_every, progress, tensorboard
        Checkpoint period and how many to keep; metrics period; progress bar; TensorBoard
        logs (None: when installed).
    seed, resume, overwrite
        Seed of everything random; continue from the last checkpoint in ``out``; replace an
        earlier run in ``out`` (a folder holding anything else is always refused).
    """

    model: str = "atacformer"
    data: list[str] = field(default_factory=list)
    out: str = "pretrain"
    preset: str = "cpu"
    recipe: str | None = None
    objective: str | None = None
    init_from: str | None = None
    batch_key: str | None = None
    balanced: bool = True
    triplet_margin: float = 1.0
    triplet_mining: str = "semi-hard"
    adversarial_weight: float = 1.0
    reversal_strength: float = 1.0
    lora_rank: int = 0
    lora_alpha: float | None = None
    lora_dropout: float = 0.0
    lora_targets: list[str] | None = None
    freeze_layers: int | None = None
    rna: str | None = None
    rna_base: str | None = None
    exclude_cells: str | None = None
    replacement: str | None = None
    contrastive: float | None = None
    temperature: float = 0.1
    lsi_init: bool | None = None
    lsi_components: int | None = None
    lsi_offset: float | None = None
    embedding_lr_scale: float | None = None
    pooling: str | None = None
    remove_depth: bool | None = None
    l2_normalize: bool | None = None
    bins: int | None = None
    universe: str | None = None
    genome: str | None = None
    max_length: int | None = None
    model_overrides: dict[str, Any] = field(default_factory=dict)
    mask_ratio: float | None = None
    group_by: str = "chromosome"
    tss: str | None = None
    genes: str | None = None
    dna_embeddings: str | None = None
    supervised: bool = False
    label_key: str = "cell_type"
    organ_key: str = "organ"
    context: str = "random"
    order: str = "genomic"
    batching: str = "bucket"
    bucket_window: int = 64
    block_size: int = 1
    num_workers: int = 0
    max_steps: int | None = None
    epochs: float | None = None
    min_steps: int | None = None
    time_budget: float | None = None
    batch_size: int | None = None
    grad_accum: int = 1
    lr: float | None = None
    min_lr_ratio: float = 0.1
    warmup_steps: int | None = None
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-8
    max_grad_norm: float = 1.0
    precision: str = "auto"
    compile: bool = False
    activation_checkpointing: bool = False
    parallel: str = "ddp"
    device: str | None = None
    save_every: int | None = None
    keep_checkpoints: int = 2
    log_every: int = 1
    progress: bool = True
    tensorboard: bool | None = None
    seed: int = 0
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self):
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name, allowed in _OPTIONAL_CHOICES.items():
            if getattr(self, name) is not None and getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if isinstance(self.data, (str, Path)):
            self.data = [str(self.data)]
        self.data = [str(d) for d in self.data]
        for name in ("grad_accum", "bucket_window", "block_size", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("batch_size", "save_every", "max_length"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be at least 1, got {v}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0 (0: export the initialised model), got {self.max_steps}")
        for name in ("epochs", "time_budget", "lr"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be > 0, got {v}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.mask_ratio is not None and not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.group_by == "class" and not (self.tss or self.genes):
            raise ValueError("group_by='class' needs a region annotation: tss= and/or genes= (BED files)")
        if self.model == "masked-bin" and (self.objective not in (None, "rtd") or self.replacement
                                           or self.contrastive or self.lsi_init):
            raise ValueError("objective, replacement, contrastive and lsi_init are switches of the Atacformer "
                             "model (--model atacformer)")
        if self.triplet_mining not in _TRIPLET_MINING:
            raise ValueError(f"triplet_mining must be one of {_TRIPLET_MINING}, got {self.triplet_mining!r}")
        if self.lora_rank < 0 or (self.freeze_layers is not None and self.freeze_layers < 0):
            raise ValueError(f"lora_rank and freeze_layers must be >= 0, got {self.lora_rank}, {self.freeze_layers}")
        if self.lora_rank and self.freeze_layers is not None:
            raise ValueError("choose LoRA (lora_rank) or freezing layers (freeze_layers), not both")
        if self.objective in FINETUNE_OBJECTIVES:
            if self.model != "atacformer":
                raise ValueError(f"objective {self.objective!r} fine-tunes an Atacformer model (--model atacformer)")
            if self.objective == "batch-adversarial" and not self.batch_key:
                raise ValueError("objective 'batch-adversarial' needs batch_key (--batch-key): the obs column "
                                 "of the batches")
            if self.recipe or self.lsi_init or self.contrastive or self.replacement:
                raise ValueError(f"recipe, lsi_init, contrastive and replacement are pretraining switches; "
                                 f"objective {self.objective!r} fine-tunes")
        if self.objective in PAIRED_OBJECTIVES:
            if self.model != "atacformer":
                raise ValueError(f"objective {self.objective!r} trains an Atacformer ATAC encoder (--model atacformer)")
            if self.recipe or self.lsi_init or self.contrastive or self.replacement:
                raise ValueError(f"recipe, lsi_init, contrastive and replacement are pretraining switches; "
                                 f"objective {self.objective!r} is contrastive RNA-ATAC training")
            if self.objective == "multimodal" and not self.genes:
                raise ValueError("objective 'multimodal' needs a gene annotation (genes: a GTF or genes BED) to "
                                 "compute the ATAC cells' gene activity")
        elif self.rna or self.rna_base:
            raise ValueError(f"rna and rna_base are settings of objective 'craft' (objective is {self.objective!r})")
        if (self.lora_rank or self.freeze_layers is not None) and not self.init_from:
            raise ValueError("lora_rank and freeze_layers fine-tune a pretrained model: set init_from (the base "
                             "model folder)")
        if self.model == "atacformer" and (self.group_by != "chromosome" or self.dna_embeddings
                                           or self.supervised):
            raise ValueError("group_by, dna_embeddings and supervised are switches of the masked-bin "
                             "model (--model masked-bin)")

    # -- presets ------------------------------------------------------------------------
    def resolved(self) -> "TrainConfig":
        """A copy with every ``None`` field taken from the recipe, then the preset.

        ``max_steps`` stays ``None`` when the preset sizes it from the data
        (``epochs`` / ``time_budget``); the trainer then fills it in.
        """
        changes: dict[str, Any] = {}
        paired = self.objective in PAIRED_OBJECTIVES
        finetune = self.objective in FINETUNE_OBJECTIVES or paired
        if self.model == "atacformer":
            recipe = None if finetune else self.recipe or (None if self.objective == "rtd" else DEFAULT_RECIPE)
            fill = {**RECIPE_DEFAULTS, **(RECIPES[recipe] if recipe else {})}
            if finetune:  # no pretraining switch applies
                fill = {k: RECIPE_DEFAULTS[k] for k in ("lsi_init", "lsi_components", "lsi_offset", "contrastive",
                                                        "embedding_lr_scale")}
            if self.init_from:  # the base model's architecture and embedding settings stay
                fill.update(lsi_init=False, pooling=None, remove_depth=None, l2_normalize=None)
            changes.update({k: v for k, v in fill.items() if getattr(self, k) is None})
            changes["recipe"] = recipe
        train = {**TRAIN_PRESETS[self.preset], **(CRAFT_TRAIN if paired else FINETUNE_TRAIN if finetune else {})}
        changes.update({k: v for k, v in train.items() if getattr(self, k) is None and k not in changes})
        out = dataclasses.replace(self, **changes)
        if out.lora_rank and out.lora_alpha is None:
            out.lora_alpha = 2.0 * out.lora_rank
        if out.max_length is None and out.model not in TASK_MODELS:
            out.max_length = int(out.base_config().max_length if out.init_from else out._preset_model()["max_length"])
        return out

    def base_config(self):
        """The :class:`~atacformer.models.AtacformerConfig` of ``init_from`` (read from its
        ``config.json``; geniml folders translated)."""
        from atacformer.models import AtacformerConfig
        from atacformer.models._pretrained import read_config_json, resolve_model_dir
        from atacformer.models.atacformer.modeling_atacformer import is_geniml_config

        meta = read_config_json(resolve_model_dir(self.init_from))
        if is_geniml_config(meta):
            return AtacformerConfig.from_geniml(meta)
        if meta.get("model_type") != AtacformerConfig.model_type:
            raise ValueError(f"{self.init_from}: a {meta.get('model_type')!r} model; init_from takes an "
                             "Atacformer model folder (ours or geniml's)")
        return AtacformerConfig.from_dict(meta)

    def _preset_model(self) -> dict[str, Any]:
        kw = dict(MODEL_PRESETS[self.model][self.preset])
        if self.model == "atacformer" and self.preset == "cpu" and self.objective == "rtd":
            kw.update(CPU_RTD)  # a token-level objective needs attention to see other tokens
        return kw

    def model_kwargs(self) -> dict[str, Any]:
        """Model config fields: the preset's architecture (none with ``init_from``: the base
        model's), then ``max_length``, the mask ratio, the fine-tuning switches and
        ``model_overrides``."""
        kw = {} if self.init_from else self._preset_model()
        if self.objective in FINETUNE_OBJECTIVES:
            kw.update(finetune_objective=self.objective, balanced=bool(self.balanced),
                      triplet_margin=float(self.triplet_margin),
                      triplet_mining=self.triplet_mining, adversarial_weight=float(self.adversarial_weight),
                      reversal_strength=float(self.reversal_strength))
        if self.lora_rank:
            from atacformer.models.atacformer.finetuning import default_lora_targets

            targets = self.lora_targets or default_lora_targets(self.base_config())
            kw["lora"] = dict(rank=int(self.lora_rank), alpha=float(self.lora_alpha or 2 * self.lora_rank),
                              dropout=float(self.lora_dropout), targets=list(targets))
        if self.max_length is not None:
            kw["max_length"] = int(self.max_length)
        if self.mask_ratio is not None:
            if self.model == "masked-bin":
                kw["mask_ratio"] = float(self.mask_ratio)
            else:
                kw["replace_prob" if self.objective == "rtd" else "hide_prob"] = float(self.mask_ratio)
        for name in ("pooling", "remove_depth", "l2_normalize"):
            if getattr(self, name) is not None:
                kw[name] = getattr(self, name)
        if self.model == "atacformer" and self.contrastive:
            kw.update(contrastive_weight=float(self.contrastive), temperature=float(self.temperature))
        kw.update(self.model_overrides)
        return kw

    # -- persistence --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; known: {sorted(names)}")
        return cls(**d)

    def save(self, path) -> None:
        """Write as JSON (atomically)."""
        from atacformer.io._atomic import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def check_resumable(self, saved: "TrainConfig") -> None:
        """Raise ``ValueError`` naming every field that differs from ``saved`` and would change
        the run's numbers (see :data:`RESUMABLE_FIELDS`)."""
        diff = [f"{k}: {getattr(saved, k)!r} -> {getattr(self, k)!r}"
                for k in (f.name for f in dataclasses.fields(self))
                if k not in RESUMABLE_FIELDS and getattr(self, k) != getattr(saved, k)]
        if diff:
            raise ValueError("--resume with settings that differ from the saved run "
                             f"(train_config.json): {'; '.join(diff)}. Use the same flags, or a new --out")
