"""GET (Fu 2025): a transformer over the regions around a gene's TSS.

A gene in a cell type is read as the ``N`` regions nearest its TSS within a window
(``N = 200``, 2 Mb in Fu 2025), ordered by position. Region ``i`` is a feature vector
``x_i = [m_i, a_i]``: motif scores ``m_i`` and the accessibility ``a_i`` of that cell type
(logCPM of its pseudo-bulk). The model:

1. standardises the features (mean and scale of the training windows, stored as buffers so
   a saved model reads new data the same way), embeds each region with one linear layer
   and no activation, and adds a learned embedding of the signed distance to the TSS
   (log2 buckets; a gene is read at its own TSS);
2. runs a transformer encoder over the regions (:class:`~atacformer.models._layers.Encoder`).

Pretraining (:class:`GETForMaskedRegions`) replaces half the regions of a window by a
learned mask vector (after the linear embedding) and reconstructs their standardised
feature vectors: mean squared error over the masked regions. Fine-tuning
(:class:`GETForExpression`) pools the regions by attention (a learned score per region,
softmax over the window) and maps the pooled vector through an MLP to a log expression
rate, trained under a Poisson likelihood (``PoissonNLLLoss(log_input=True)``) on the
pseudo-bulk's counts per million; the encoder is adapted through LoRA (Hu 2022) with its
weights frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from atacformer.models._layers import Encoder, init_weights
from atacformer.models._pretrained import PretrainedMixin, load_state_dict, read_config_json, resolve_model_dir
from atacformer.models.get.configuration_get import DEFAULT_LORA_TARGETS, GETConfig

_DISTANCE_UNIT = 250  # bp: bucket b >= 1 holds distances in [250 (2^(b-1) - 1), 250 (2^b - 1))


def distance_bucket(distance: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """Bucket ids of signed region-TSS distances (bp; negative = upstream): log2 steps of
    250 bp, ``n_buckets // 2`` per side; distances past the last step share its bucket.

    Examples
    --------
    >>> distance_bucket(torch.tensor([-1000, -1, 0, 200, 1000, 10**9]), 8).tolist()
    [1, 3, 4, 4, 6, 7]
    """
    half = n_buckets // 2
    step = torch.floor(torch.log2(1.0 + distance.abs().double() / _DISTANCE_UNIT)).long().clamp(max=half - 1)
    return torch.where(distance >= 0, half + step, half - 1 - step)


@dataclass
class GETOutput:
    """``loss`` (scalar or None) and what the head computed: ``reconstruction`` (B, N, F)
    of masked pretraining, or ``log_rate`` (B,) and ``attention`` (B, N) pooling weights
    of fine-tuning, with ``expression`` (B,) the predicted counts per million (``exp`` of the
    log rate, or ``expm1`` of the ``log1p_mse`` head); ``hidden`` (B, N, D) the encoder output."""

    loss: torch.Tensor | None
    hidden: torch.Tensor
    reconstruction: torch.Tensor | None = None
    log_rate: torch.Tensor | None = None
    attention: torch.Tensor | None = None
    expression: torch.Tensor | None = None


class GETModel(PretrainedMixin, nn.Module):
    """The GET backbone: region features -> contextual region vectors.

    Examples
    --------
    >>> cfg = GETConfig(n_features=3, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    >>> m = GETModel(cfg)
    >>> m(torch.zeros(2, 5, 3), torch.ones(2, 5, dtype=torch.bool), torch.zeros(2, 5, dtype=torch.long)).shape
    torch.Size([2, 5, 16])
    """

    config_class = GETConfig
    base_model_prefix = "get"
    is_base_model = True

    def __init__(self, config: GETConfig, vocab=None):
        super().__init__()
        self.config, self.vocab = config, None
        c = config
        self.region_embed = nn.Linear(c.n_features, c.hidden_size)  # linear, no activation (Fu 2025)
        self.distance_embed = nn.Embedding(c.distance_buckets, c.hidden_size)
        self.mask_vector = nn.Parameter(torch.zeros(c.hidden_size))
        self.dropout = nn.Dropout(c.dropout)
        self.encoder = Encoder(c.num_layers, c.hidden_size, c.num_heads, c.intermediate_size, c.dropout)
        self.register_buffer("feature_mean", torch.zeros(c.n_features))
        self.register_buffer("feature_scale", torch.ones(c.n_features))
        self.apply(lambda m: init_weights(m, c.initializer_range))
        nn.init.normal_(self.mask_vector, std=c.initializer_range)

    def set_feature_scaling(self, mean, scale) -> None:
        """Store the training features' column mean and scale (zero scales become 1)."""
        mean = torch.as_tensor(mean, dtype=torch.float32)
        scale = torch.as_tensor(scale, dtype=torch.float32)
        if mean.shape != (self.config.n_features,) or scale.shape != mean.shape:
            raise ValueError(f"feature mean / scale must have shape ({self.config.n_features},), "
                             f"got {tuple(mean.shape)} / {tuple(scale.shape)}")
        self.feature_mean.copy_(mean)
        self.feature_scale.copy_(torch.where(scale > 0, scale, torch.ones_like(scale)))

    def standardize(self, features: torch.Tensor) -> torch.Tensor:
        """(B, N, F) raw features -> standardised with the stored mean and scale."""
        return (features - self.feature_mean) / self.feature_scale

    def forward(self, features: torch.Tensor, attention_mask: torch.Tensor, distance: torch.Tensor,
                masked: torch.Tensor | None = None) -> torch.Tensor:
        """``features`` (B, N, F) raw region features, ``attention_mask`` (B, N) bool (True =
        a region, False = padding), ``distance`` (B, N) signed bp from the TSS, ``masked``
        (B, N) bool regions replaced by the mask vector -> (B, N, D)."""
        h = self.region_embed(self.standardize(features))  # (B, N, D)
        if masked is not None:
            h = torch.where(masked.unsqueeze(-1), self.mask_vector.to(h.dtype), h)
        h = h + self.distance_embed(distance_bucket(distance, self.config.distance_buckets))
        return self.encoder(self.dropout(h), attention_mask)  # (B, N, D)


class GETForMaskedRegions(PretrainedMixin, nn.Module):
    """GET pretraining: reconstruct masked regions' feature vectors (MSE).

    Examples
    --------
    >>> cfg = GETConfig(n_features=3, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    >>> m = GETForMaskedRegions(cfg)
    >>> keep = torch.ones(2, 4, dtype=torch.bool)
    >>> out = m(torch.randn(2, 4, 3), keep, torch.zeros(2, 4, dtype=torch.long), masked=keep)
    >>> out.reconstruction.shape, out.loss.ndim
    (torch.Size([2, 4, 3]), 0)
    """

    config_class = GETConfig
    base_model_prefix = "get"

    def __init__(self, config: GETConfig, vocab=None):
        super().__init__()
        self.config, self.vocab = config, None
        self.get = GETModel(config)
        self.decoder = nn.Linear(config.hidden_size, config.n_features)
        init_weights(self.decoder, config.initializer_range)

    def forward(self, features, attention_mask, distance, masked=None) -> GETOutput:
        """As :meth:`GETModel.forward`; the loss is the mean squared error of the
        standardised features over the masked real regions (None without ``masked``)."""
        hidden = self.get(features, attention_mask, distance, masked)
        recon = self.decoder(hidden)  # (B, N, F), standardised units
        loss = None
        if masked is not None:
            sel = masked & attention_mask.bool()
            target = self.get.standardize(features)
            loss = F.mse_loss(recon[sel].float(), target[sel].float()) if bool(sel.any()) else recon.sum() * 0.0
        return GETOutput(loss=loss, hidden=hidden, reconstruction=recon)


def _freeze_backbone(model: nn.Module) -> None:
    """Only LoRA adapters train inside the backbone."""
    for name, p in model.named_parameters():
        p.requires_grad = "lora_" in name


class GETForExpression(PretrainedMixin, nn.Module):
    """GET fine-tuning: attention pooling over a gene's regions + MLP -> log expression,
    trained with a Poisson negative log-likelihood.

    Examples
    --------
    >>> cfg = GETConfig(n_features=3, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    >>> m = GETForExpression(cfg)
    >>> keep = torch.ones(2, 4, dtype=torch.bool)
    >>> out = m(torch.randn(2, 4, 3), keep, torch.zeros(2, 4, dtype=torch.long), target=torch.tensor([3.0, 0.0]))
    >>> out.log_rate.shape, out.loss.ndim
    (torch.Size([2]), 0)
    """

    config_class = GETConfig
    base_model_prefix = "get"

    def __init__(self, config: GETConfig, vocab=None):
        super().__init__()
        self.config, self.vocab = config, None
        c = config
        self.get = GETModel(config)
        self.pool_score = nn.Linear(c.hidden_size, 1)
        self.head = nn.Sequential(nn.Linear(c.hidden_size, c.head_hidden_size), nn.GELU(),
                                  nn.Linear(c.head_hidden_size, 1))
        for m in (self.pool_score, self.head):
            m.apply(lambda mod: init_weights(mod, c.initializer_range))
        self.loss_fn = nn.PoissonNLLLoss(log_input=True, full=False)
        if c.lora:
            self._inject_lora(c.lora)

    def _inject_lora(self, lora: dict) -> None:
        from atacformer.models.atacformer.finetuning import add_lora

        add_lora(self.get.encoder, lora)
        _freeze_backbone(self.get)

    def add_lora(self, rank: int = 8, alpha: float | None = None, dropout: float = 0.0,
                 targets=DEFAULT_LORA_TARGETS) -> "GETForExpression":
        """Add LoRA adapters to the encoder and freeze every other backbone weight (in place;
        the heads keep training). Returns ``self``."""
        if self.config.lora:
            raise ValueError("this model already has LoRA adapters")
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        lora = {"rank": int(rank), "alpha": float(alpha if alpha is not None else 2 * rank),
                "dropout": float(dropout), "targets": list(targets)}
        self._inject_lora(lora)
        self.config = self.config.replace(lora=lora)
        return self

    @classmethod
    def from_pretrained_backbone(cls, path, **changes) -> "GETForExpression":
        """A fine-tuning model whose backbone is read from a GET folder (pretrained or
        fine-tuned, with its feature scaling); its heads are new. ``changes``: config
        fields to replace (head size, dropout; not the backbone's shape)."""
        d = resolve_model_dir(path)
        meta = read_config_json(d)
        if meta.get("model_type") != GETConfig.model_type:
            raise ValueError(f"{d}: model_type {meta.get('model_type')!r} is not a GET model")
        config = GETConfig.from_dict(meta).replace(lora=None, **changes)
        model = cls(config)
        state = load_state_dict(d)
        if any("lora_" in k for k in state):
            raise ValueError(f"{d}: holds LoRA adapters; start fine-tuning from the pretrained folder")
        prefix = "get."
        own = {k: v for k, v in state.items() if k.startswith(prefix)}
        missing = sorted(set(model.get.state_dict()) - {k[len(prefix):] for k in own})
        if missing:
            raise ValueError(f"{d}: backbone weights missing: {missing[:5]}")
        model.get.load_state_dict({k[len(prefix):]: v for k, v in own.items()})
        return model

    def forward(self, features, attention_mask, distance, target=None) -> GETOutput:
        """As :meth:`GETModel.forward`; ``target`` (B,) expression (counts per million of the
        pseudo-bulk) gives the loss of ``config.objective``: the Poisson loss of ``log_rate``,
        or the squared error of the head's ``log1p`` CPM against ``log1p(target)``."""
        hidden = self.get(features, attention_mask, distance)  # (B, N, D)
        keep = attention_mask.bool()
        score = self.pool_score(hidden).squeeze(-1).float().masked_fill(~keep, float("-inf"))  # (B, N)
        attn = torch.softmax(score, dim=-1)
        pooled = torch.einsum("bn,bnd->bd", attn.to(hidden.dtype), hidden)  # (B, D)
        out = self.head(pooled).squeeze(-1).float()  # (B,)
        if self.config.objective == "log1p_mse":
            expression = torch.expm1(out.clamp(min=0.0))
            log_rate = torch.log(expression.clamp(min=1e-6))
            loss = F.mse_loss(out, torch.log1p(target.float())) if target is not None else None
        else:
            log_rate, expression = out, torch.exp(out)
            loss = self.loss_fn(log_rate, target.float()) if target is not None else None
        return GETOutput(loss=loss, hidden=hidden, log_rate=log_rate, attention=attn, expression=expression)

    def merge_adapters(self) -> "GETForExpression":
        """Fold the LoRA adapters into the encoder weights (in place); plain layers after."""
        from atacformer.models.atacformer.finetuning import lora_layers

        for name, module in lora_layers(self):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = self.get_submodule(parent_name) if parent_name else self
            setattr(parent, child, module.get_base_layer())
        self.config = self.config.replace(lora=None)
        return self
