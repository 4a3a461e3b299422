"""Atacformer: a cell is a bag of region tokens; ELECTRA-style replaced-token detection.

Seed 001 (ch. 5, appendix B): token embedding ``E`` (V x d), no positional information, L
encoder layers, context 8,192 (longer cells randomly subsampled). Pretraining corrupts each
token with probability ``p`` by a region drawn uniformly from the vocabulary and a per-token
head predicts which tokens were replaced (binary cross-entropy over non-padding positions).
A cell's embedding is the mean of its final hidden states over non-padding tokens.

Published geniml checkpoints (``model_type`` "atacformer", ``nn.TransformerEncoder``
weights, bare or under ``atacformer.``) load into these classes unchanged: see
:meth:`AtacformerModel.from_pretrained`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from atacformer.errors import VocabularyMismatchError
from atacformer.models._collate import (
    CollatorRandom, as_token_lists, check_token_range, pad_token_lists,
)
from atacformer.models._layers import Encoder, init_weights, mean_pool
from atacformer.models._pretrained import PretrainedMixin
from atacformer.models.atacformer.configuration_atacformer import AtacformerConfig

GENIML_MODEL_TYPE = "atacformer"


def is_geniml_config(meta: dict) -> bool:
    """True for a geniml Atacformer ``config.json`` (not one written by this package)."""
    return meta.get("model_type") == GENIML_MODEL_TYPE and "atacformer_version" not in meta


def convert_geniml_state_dict(state: dict[str, torch.Tensor], config: AtacformerConfig
                              ) -> dict[str, torch.Tensor]:
    """Rename geniml weights to ours: ``nn.MultiheadAttention``'s packed ``in_proj`` becomes
    ``self_attn.qkv``; an unused position table is dropped. Nothing else changes."""
    out = {}
    for k, v in state.items():
        if k.endswith("embeddings.position_embeddings.weight") and not config.use_position_embeddings:
            continue
        k = k.replace("self_attn.in_proj_weight", "self_attn.qkv.weight")
        k = k.replace("self_attn.in_proj_bias", "self_attn.qkv.bias")
        out[k] = v
    return out


class _AtacformerLoading(PretrainedMixin):
    """Loading shared by the Atacformer classes: our folders and geniml folders."""

    config_class = AtacformerConfig
    base_model_prefix = "atacformer"

    @classmethod
    def _config_from_json(cls, meta: dict, directory: Path):
        if is_geniml_config(meta):
            return AtacformerConfig.from_geniml(meta)
        return super()._config_from_json(meta, directory)

    @classmethod
    def _check_vocab(cls, d, meta, config, vocab) -> None:
        super()._check_vocab(d, meta, config, vocab)
        if vocab is not None:
            if "<pad>" not in vocab.special_tokens or vocab.token_id("<pad>") != config.pad_token_id:
                raise VocabularyMismatchError(
                    f"{d}: config.json has pad_token_id {config.pad_token_id} but the vocabulary's "
                    f"special tokens are {vocab.special_tokens} after {vocab.n_regions:,} regions")

    @classmethod
    def _build_for_loading(cls, config, vocab):
        if vocab is not None and vocab.n_regions != config.n_regions:
            config = config.replace(n_regions=vocab.n_regions)
        return cls(config, vocab=vocab)

    @classmethod
    def _convert_state_dict(cls, state, meta, config):
        return convert_geniml_state_dict(state, config) if is_geniml_config(meta) else state

    # -- inference inputs (shared by embed_cells) --------------------------------------
    def prepare_inputs(self, cells, max_length: int | None = None,
                       rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        """Padded ``input_ids`` / ``attention_mask`` (B, L) from cells (token-id arrays or
        CSR); cells longer than ``max_length`` (default: the context) are subsampled."""
        token_lists = as_token_lists(cells)
        check_token_range(token_lists, self.config.vocab_size)
        input_ids, attention_mask = pad_token_lists(
            token_lists, self.config.pad_token_id, max_length or self.config.max_length, rng)
        return {"input_ids": input_ids, "attention_mask": attention_mask}


class AtacformerEmbeddings(nn.Module):
    """Token embedding (V x d, padding row zero); optional learned sequence positions."""

    def __init__(self, config: AtacformerConfig):
        super().__init__()
        self.token_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                             padding_idx=config.pad_token_id)
        self.position_embeddings = (nn.Embedding(config.max_length, config.hidden_size)
                                    if config.use_position_embeddings else None)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.token_embeddings(input_ids)  # (B, L, D)
        if self.position_embeddings is not None:
            n = input_ids.shape[1]
            if n > self.position_embeddings.num_embeddings:
                raise ValueError(f"sequence of {n} tokens is longer than the position table "
                                 f"({self.position_embeddings.num_embeddings})")
            x = x + self.position_embeddings(torch.arange(n, device=input_ids.device))[None]
        return x


class AtacformerModel(_AtacformerLoading, nn.Module):
    """The Atacformer backbone: embeddings + encoder -> per-token hidden states.

    Parameters
    ----------
    config
        An :class:`AtacformerConfig`.
    vocab
        The vocabulary (saved with the model; optional).

    Examples
    --------
    >>> from atacformer import Vocabulary
    >>> v = Vocabulary(["chr1"] * 100, range(0, 10000, 100), range(100, 10100, 100))
    >>> cfg = AtacformerConfig.for_vocab(v, hidden_size=32, num_layers=2, num_heads=4,
    ...                                  intermediate_size=64)
    >>> model = AtacformerModel(cfg, vocab=v)
    >>> batch = model.prepare_inputs([[1, 5, 9], [2, 3]])
    >>> model.embed(**batch).shape
    torch.Size([2, 32])
    """

    is_base_model = True

    def __init__(self, config: AtacformerConfig, vocab=None):
        super().__init__()
        self.config = config
        self.vocab = vocab
        self.embeddings = AtacformerEmbeddings(config)
        self.encoder = Encoder(config.num_layers, config.hidden_size, config.num_heads,
                               config.intermediate_size, config.dropout, config.activation,
                               config.norm_first, config.layer_norm_eps)
        if config.pooling == "idf":  # IDF of the training cells, saved with the weights
            self.register_buffer("token_idf", torch.zeros(config.vocab_size))
        self.cell_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.cell_norm else None
        self.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        """``input_ids`` (B, L), ``attention_mask`` (B, L) bool -> hidden states (B, L, D)."""
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_token_id
        return self.encoder(self.embeddings(input_ids), attention_mask)  # (B, L, D)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              pooling: str | None = None) -> torch.Tensor:
        """Cell embeddings (B, D): the mean of the final hidden states over real tokens
        (``pooling="mean"``) or their mean weighted by the training cells' IDF (``"idf"``);
        default: the config's ``pooling``."""
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_token_id
        return self.pool(self(input_ids, attention_mask), input_ids, attention_mask, pooling)

    def pool(self, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             pooling: str | None = None) -> torch.Tensor:
        """Pool hidden states (B, L, D) of ``input_ids`` into cell vectors (B, D)."""
        pooling = pooling or self.config.pooling
        keep = attention_mask.bool()
        if pooling == "mean":
            z = mean_pool(hidden, keep)
        elif pooling == "idf":
            if not hasattr(self, "token_idf"):
                raise ValueError("pooling='idf' needs a model built with pooling='idf' (it stores the IDF)")
            w = self.token_idf[input_ids] * keep.to(hidden.dtype)  # (B, L)
            z = (hidden * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-12)
        else:
            raise ValueError(f"Atacformer pooling must be 'mean' or 'idf', got {pooling!r}")
        return z if self.cell_norm is None else self.cell_norm(z)


class ReplacedTokenHead(nn.Module):
    """Per-token logit that the token was replaced: geniml's ELECTRA-small head (dense,
    GELU, LayerNorm, linear) or a single linear layer."""

    def __init__(self, config: AtacformerConfig):
        super().__init__()
        d = config.hidden_size
        if config.head == "mlp":
            h = config.head_hidden_size or d
            self.dense = nn.Linear(d, h)
            self.act = nn.GELU()
            self.norm = nn.LayerNorm(h, eps=config.head_norm_eps)
            self.classifier = nn.Linear(h, 1)
        else:
            self.dense = self.act = self.norm = None
            self.classifier = nn.Linear(d, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden`` (B, L, D) -> logits (B, L)."""
        if self.dense is not None:
            hidden = self.norm(self.act(self.dense(hidden)))
        return self.classifier(hidden).squeeze(-1)


@dataclass
class ReplacedTokenDetectionOutput:
    """``loss`` (scalar or None), ``logits`` (B, L), ``hidden_states`` (B, L, D)."""

    loss: torch.Tensor | None
    logits: torch.Tensor
    hidden_states: torch.Tensor


class AtacformerForReplacedTokenDetection(_AtacformerLoading, nn.Module):
    """Atacformer with the replaced-token-detection head (the pretraining model).

    Examples
    --------
    >>> from atacformer import Vocabulary
    >>> v = Vocabulary(["chr1"] * 100, range(0, 10000, 100), range(100, 10100, 100))
    >>> cfg = AtacformerConfig.for_vocab(v, hidden_size=32, num_layers=2, num_heads=4,
    ...                                  intermediate_size=64)
    >>> model = AtacformerForReplacedTokenDetection(cfg, vocab=v)
    >>> batch = ReplacedTokenCollator(cfg, seed=0)([np.arange(20), np.arange(50, 60)])
    >>> out = model(**batch)
    >>> out.logits.shape, out.loss.ndim
    (torch.Size([2, 20]), 0)
    """

    def __init__(self, config: AtacformerConfig, vocab=None):
        super().__init__()
        self.config = config
        self.vocab = vocab
        self.atacformer = AtacformerModel(config, vocab=None)
        self.discriminator = ReplacedTokenHead(config)
        self.discriminator.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, view_a: torch.Tensor | None = None,
                view_b: torch.Tensor | None = None) -> ReplacedTokenDetectionOutput:
        """``labels`` (B, L): 1 = replaced, 0 = original, -100 = ignored (padding).
        ``view_a``, ``view_b`` (B, L'): two disjoint token subsets of the same cells (padded
        with ``<pad>``); with ``config.contrastive_weight > 0`` their InfoNCE is added."""
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_token_id
        hidden = self.atacformer(input_ids, attention_mask)  # (B, L, D)
        logits = self.discriminator(hidden)  # (B, L)
        loss = None
        if labels is not None:
            active = (labels != -100) & attention_mask.bool()
            loss = F.binary_cross_entropy_with_logits(logits[active].float(),
                                                      labels[active].float())
            if view_a is not None and self.config.contrastive_weight > 0:
                from atacformer.models._quality import cell_contrastive_loss

                za, zb = self.atacformer.embed(view_a), self.atacformer.embed(view_b)
                loss = loss + self.config.contrastive_weight * cell_contrastive_loss(
                    za, zb, self.config.temperature)
        return ReplacedTokenDetectionOutput(loss=loss, logits=logits, hidden_states=hidden)

    def embed(self, input_ids, attention_mask=None, pooling=None) -> torch.Tensor:
        """Cell embeddings (B, D), as :meth:`AtacformerModel.embed`."""
        return self.atacformer.embed(input_ids, attention_mask, pooling)


def replace_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, replace_prob: float,
                   n_regions: int, generator: torch.Generator | None = None,
                   token_probs: torch.Tensor | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """ELECTRA corruption: each real token is replaced, with probability ``replace_prob``,
    by a region drawn uniformly from ``[0, n_regions)`` or, with ``token_probs`` (a
    (n_regions,) distribution, e.g. corpus token frequencies), drawn from that distribution,
    so that replacements look like real open regions and cannot be spotted by rarity alone.

    Returns
    -------
    corrupted
        (B, L) token ids.
    labels
        (B, L) int64: 1 where the token changed, 0 where it did not (a draw equal to the
        original counts as original, as in ELECTRA), -100 on padding.
    """
    mask = attention_mask.bool()
    chosen = (torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
              < replace_prob) & mask
    if token_probs is None:
        draws = torch.randint(0, n_regions, input_ids.shape, generator=generator,
                              device=input_ids.device)
    else:
        if token_probs.shape != (n_regions,):
            raise ValueError(f"token_probs has shape {tuple(token_probs.shape)}; expected ({n_regions},)")
        draws = torch.multinomial(token_probs.float(), input_ids.numel(), replacement=True,
                                  generator=generator).view(input_ids.shape).to(input_ids.device)
    corrupted = torch.where(chosen, draws, input_ids)
    labels = (corrupted != input_ids).long()
    labels[~mask] = -100
    return corrupted, labels


class ReplacedTokenCollator:
    """Cells -> a corrupted, padded pretraining batch (``input_ids``, ``attention_mask``,
    ``labels``) for :class:`AtacformerForReplacedTokenDetection`.

    Parameters
    ----------
    config
        The model's config (context size, pad id, number of regions, ``replace_prob``).
    replace_prob, max_length
        Override the config's values.
    seed
        Seed of the collator's own generators (subsampling and corruption); in
        ``DataLoader`` workers the streams also depend on the worker's seed.
    token_probs
        Optional (n_regions,) replacement distribution (e.g. from
        :func:`atacformer.models.token_frequencies`); default uniform.
    """

    def __init__(self, config: AtacformerConfig, replace_prob: float | None = None,
                 max_length: int | None = None, seed: int | None = None, token_probs=None):
        self.config = config
        self.token_probs = None if token_probs is None else torch.as_tensor(token_probs, dtype=torch.float32)
        self.replace_prob = config.replace_prob if replace_prob is None else replace_prob
        self.max_length = max_length or config.max_length
        self.random = CollatorRandom(seed)

    def __call__(self, cells) -> dict[str, torch.Tensor]:
        token_lists = as_token_lists(cells)
        check_token_range(token_lists, self.config.vocab_size)
        input_ids, attention_mask = pad_token_lists(token_lists, self.config.pad_token_id,
                                                    self.max_length, self.random.numpy)
        corrupted, labels = replace_tokens(input_ids, attention_mask, self.replace_prob,
                                           self.config.n_regions, self.random.torch,
                                           token_probs=self.token_probs)
        return {"input_ids": corrupted, "attention_mask": attention_mask, "labels": labels}


def profile_loss(logits: torch.Tensor, target_ids: torch.Tensor, depth_offset: bool,
                 log_depth_center: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary cross-entropy of region scores ``logits`` (B, R) against each cell's open
    regions ``target_ids`` (B, T; padded with ids outside ``[0, R)``), averaged over regions
    and cells; with ``depth_offset`` each cell's centred log depth is first added to its
    scores. Returns ``(logits, loss)`` (the logits with the offset)."""
    r = logits.shape[1]
    valid = (target_ids >= 0) & (target_ids < r)
    if depth_offset:  # (B, 1): the cell's centred log depth
        depth = valid.sum(1, keepdim=True).clamp_min(1).float()
        logits = logits + (torch.log(depth) - log_depth_center).to(logits.dtype)
    target = torch.zeros_like(logits, dtype=torch.float32)
    rows = torch.arange(len(target_ids), device=target_ids.device)[:, None].expand_as(target_ids)
    target[rows[valid], target_ids[valid]] = 1.0
    return logits, F.binary_cross_entropy_with_logits(logits.float(), target)


@dataclass
class ProfileReconstructionOutput:
    """``loss`` (scalar or None), ``logits`` (B, n_regions), ``cell`` (B, D) pooled vectors."""

    loss: torch.Tensor | None
    logits: torch.Tensor
    cell: torch.Tensor


class AtacformerForProfileReconstruction(_AtacformerLoading, nn.Module):
    """Atacformer trained to reconstruct a cell's whole profile through its pooled vector.

    A fraction ``config.hide_prob`` of the cell's tokens is hidden; the rest go through the
    encoder and are pooled into one cell vector ``z`` (B, D); a linear decoder scores every
    region of the vocabulary from ``z`` alone, ``logits = z W^T + b`` (B, n_regions), and the
    loss is the binary cross-entropy of those scores against the cell's full binary profile
    (hidden tokens included), averaged over regions and cells. The bottleneck makes ``z``
    carry the whole profile: the reconstruction objective of PeakVI (Ashuach 2022) with a
    set encoder in place of an MLP on the count vector, and the masked-bin decoding of the
    dissertation (LeRoy 2025) with a pooled cell state. The decoder bias starts at the
    log-odds of each region's training frequency, so training spends its steps on what
    differs between cells rather than on how often each region is open, and each cell's
    centred log depth is added to its scores (PeakVI's library factor), so that ``z`` carries
    composition rather than depth.

    Examples
    --------
    >>> from atacformer import Vocabulary
    >>> v = Vocabulary(["chr1"] * 100, range(0, 10000, 100), range(100, 10100, 100))
    >>> cfg = AtacformerConfig.for_vocab(v, hidden_size=32, num_layers=1, num_heads=4,
    ...                                  intermediate_size=64)
    >>> model = AtacformerForProfileReconstruction(cfg, vocab=v)
    >>> ids = torch.tensor([[1, 5, 9, cfg.pad_token_id]])
    >>> out = model(ids, target_ids=torch.tensor([[1, 5, 9, 20]]))
    >>> out.logits.shape, out.loss.ndim
    (torch.Size([1, 100]), 0)
    """

    def __init__(self, config: AtacformerConfig, vocab=None):
        super().__init__()
        self.config = config
        self.vocab = vocab
        self.atacformer = AtacformerModel(config, vocab=None)
        # region scores: a table of their own, or the token table itself (tied)
        self.decoder = None if config.tie_decoder else nn.Linear(config.hidden_size, config.n_regions, bias=False)
        if self.decoder is not None:
            self.decoder.apply(lambda m: init_weights(m, config.initializer_range))
        self.decoder_bias = nn.Parameter(torch.zeros(config.n_regions))
        # mean log number of open regions per training cell (centre of the depth offset)
        self.register_buffer("log_depth_center", torch.zeros(()))

    def _decoder_weight(self) -> torch.Tensor:
        if self.config.tie_decoder:
            return self.atacformer.embeddings.token_embeddings.weight[: self.config.n_regions]
        return self.decoder.weight

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                target_ids: torch.Tensor | None = None) -> ProfileReconstructionOutput:
        """``input_ids`` (B, L) the visible tokens; ``target_ids`` (B, T) every open region of
        each cell, padded with any id outside ``[0, n_regions)``."""
        z = self.atacformer.embed(input_ids, attention_mask)  # (B, D)
        logits = F.linear(z, self._decoder_weight(), self.decoder_bias)  # (B, R)
        loss = None
        if target_ids is not None:
            logits, loss = profile_loss(logits, target_ids, self.config.depth_offset, self.log_depth_center)
        return ProfileReconstructionOutput(loss=loss, logits=logits, cell=z)

    def embed(self, input_ids, attention_mask=None, pooling=None) -> torch.Tensor:
        """Cell embeddings (B, D), as :meth:`AtacformerModel.embed` (every token visible)."""
        return self.atacformer.embed(input_ids, attention_mask, pooling)

    def init_decoder_bias(self, open_fraction, depths=None) -> None:
        """Set the decoder bias to the log-odds of each region's open fraction (n_regions,)
        and, with ``depths`` (open regions per training cell), the depth offset's centre."""
        p = torch.as_tensor(open_fraction, dtype=torch.float32).clamp(1e-6, 1 - 1e-6)
        with torch.no_grad():
            self.decoder_bias.copy_(torch.log(p / (1 - p)).to(self.decoder_bias))
            if depths is not None and len(depths):
                d = torch.as_tensor(np.maximum(np.asarray(depths, dtype=np.float64), 1.0))
                self.log_depth_center.fill_(float(torch.log(d).mean()))
