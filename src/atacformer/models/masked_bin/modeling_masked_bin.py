"""The masked-bin model (Ge 2025).

A cell is the sentence ``<cls>, bins of group 1, <eos_1>, bins of group 2, <eos_2>, ...``
(groups: chromosomes, or genomic-region classes); during pretraining a fraction of the open
bins is removed from it. The encoder reads the sentence; the decoder predicts the state of
*every* bin of the vocabulary (0 = not in the cell, 1 = in the sentence, 2 = removed) from the
output of its group's ``<eos_g>`` and the bin's own embedding.

Decoder cost. The bin-wise MLP's first layer acts on ``[eos_g ; bin]``, so it splits into an
eos part (``eos_in``, once per cell and group) and a bin part (``bin_in``, once per step for
all bins); a bin's hidden pre-activation is their broadcast sum. The loss then runs over bin
chunks, each recomputed in the backward pass (activation checkpointing), so memory is
bounded by one chunk of (B, chunk, hidden) whatever the number of bins (617k for hg38 at
5 kb).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from atacformer.errors import VocabularyMismatchError
from atacformer.models._collate import as_token_lists
from atacformer.models._layers import (
    CrossAttentionBlock, Encoder, init_weights, key_padding_mask, mean_pool,
)
from atacformer.models._pretrained import PretrainedMixin
from atacformer.models.masked_bin.collate_masked_bin import (
    MaskedBinCollator, NOT_IN_CELL, collate_sentences,
)
from atacformer.models.masked_bin.configuration_masked_bin import MaskedBinConfig
from atacformer.vocab import Vocabulary

N_STATES = 3


# -- vocabulary -> groups ------------------------------------------------------------------
def masked_bin_vocabulary(vocab: Vocabulary, bin_classes=None, class_names=None
                          ) -> tuple[Vocabulary, np.ndarray, list[str]]:
    """The model's vocabulary (``vocab`` + one ``<eos_g>`` per group), the group of each bin,
    and the group names.

    Parameters
    ----------
    vocab
        Bins (any :class:`~atacformer.vocab.Vocabulary` with ``<cls>`` and ``<pad>``).
    bin_classes
        None: groups are chromosomes (in ``vocab.chrom_names`` order). Otherwise an integer
        array (n_bins,) giving each bin's region class, ``0 <= class < len(class_names)``.
    class_names
        Names of the region classes (required with ``bin_classes``).
    """
    for t in ("<cls>", "<pad>"):
        if t not in vocab.special_tokens:
            raise ValueError(f"the vocabulary has no {t} token (special tokens: {vocab.special_tokens})")
    if bin_classes is None:
        names, groups = _chrom_groups(vocab)
    else:
        if class_names is None:
            raise ValueError("bin_classes needs class_names (one name per class id)")
        names = [str(c) for c in class_names]
        groups = np.asarray(bin_classes).astype(np.int64, copy=True)
        if groups.shape != (vocab.n_regions,):
            raise ValueError(f"bin_classes has shape {groups.shape}; expected ({vocab.n_regions},), "
                             "one class per bin")
        if len(groups) and (groups.min() < 0 or groups.max() >= len(names)):
            i = int(np.flatnonzero((groups < 0) | (groups >= len(names)))[0])
            raise ValueError(f"bin {i} has class {groups[i]}; expected 0 <= class < {len(names)}")
    return vocab.with_special_tokens([f"<eos_{g}>" for g in names]), groups, names


def _chrom_groups(vocab: Vocabulary) -> tuple[list[str], np.ndarray]:
    """Chromosome names (``vocab.chrom_names`` order) and each region's chromosome index."""
    names = [str(c) for c in vocab.chrom_names]
    index = {c: i for i, c in enumerate(names)}
    return names, np.fromiter((index[c] for c in vocab.chroms), dtype=np.int64, count=vocab.n_regions)


def _genome_positions(vocab: Vocabulary, resolution: int) -> np.ndarray:
    """1-based genome-wide position bucket of every region's midpoint (chromosomes laid end
    to end in vocabulary order); 0 is left for special tokens."""
    mids = (vocab.starts + vocab.ends) // 2
    offset = np.zeros(vocab.n_regions, dtype=np.int64)
    acc = 0
    for c in vocab.chrom_names:
        sel = vocab.chroms == c
        offset[sel] = acc
        acc += int(vocab.ends[sel].max()) if sel.any() else 0
    return 1 + (offset + mids) // resolution


# -- embeddings ----------------------------------------------------------------------------
class MaskedBinEmbeddings(nn.Module):
    """Bin-id embedding (factorised E1 (V x k) -> E2 (k x d), or full V x d), plus the
    optional class, genomic-position and DNA embeddings (bin tokens only)."""

    def __init__(self, config: MaskedBinConfig):
        super().__init__()
        c = config
        self.n_bins = c.n_bins
        if c.embedding == "factorized":
            self.bin_embeddings = nn.Embedding(c.vocab_size, c.embedding_dim, padding_idx=c.pad_token_id)
            self.projection = nn.Linear(c.embedding_dim, c.hidden_size, bias=False)  # E2
        else:
            self.bin_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
            self.projection = None
        self.register_buffer("bin_groups", torch.zeros(c.n_bins, dtype=torch.long))
        self.class_embeddings = nn.Embedding(c.n_groups, c.hidden_size) if c.class_embedding else None
        if c.position_encoding == "genomic":
            self.position_embeddings = nn.Embedding(c.n_position_buckets + 1, c.hidden_size, padding_idx=0)
            self.register_buffer("bin_positions", torch.zeros(c.n_bins, dtype=torch.long))
        else:
            self.position_embeddings = None
        if c.dna_embedding_dim:
            self.register_buffer("dna_table", torch.zeros(c.n_bins, c.dna_embedding_dim))
            self.dna_projection = nn.Linear(c.dna_embedding_dim, c.hidden_size, bias=False)
        else:
            self.dna_projection = None

    def token_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """Bin-id embedding of ``ids`` (any shape) -> (..., d)."""
        x = self.bin_embeddings(ids)
        return self.projection(x) if self.projection is not None else x

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``input_ids`` (B, L) -> (B, L, d)."""
        x = self.token_vectors(input_ids)  # (B, L, D)
        is_bin = input_ids < self.n_bins  # (B, L)
        bin_ids = input_ids.clamp(max=self.n_bins - 1)
        if self.class_embeddings is not None:
            x = x + self.class_embeddings(self.bin_groups[bin_ids]) * is_bin.unsqueeze(-1)
        if self.position_embeddings is not None:
            x = x + self.position_embeddings(torch.where(is_bin, self.bin_positions[bin_ids], 0))
        if self.dna_projection is not None:
            dna = self.dna_table[bin_ids] * is_bin.unsqueeze(-1)  # zeros for special tokens
            x = x + self.dna_projection(dna.to(x.dtype))
        return x


class _MaskedBinBase(PretrainedMixin):
    """Construction from a vocabulary, loading checks and inference inputs."""

    config_class = MaskedBinConfig
    base_model_prefix = "masked_bin"

    @classmethod
    def _convert_state_dict(cls, state, meta, config):
        # folders saved before the backbone attribute was named ``masked_bin`` used ``model.``
        return {("masked_bin." + k[6:] if k.startswith("model.") else k): v for k, v in state.items()}

    @classmethod
    def from_vocab(cls, vocab: Vocabulary, config: MaskedBinConfig | None = None, *,
                   bin_classes=None, class_names=None, dna_embeddings=None, **config_kwargs):
        """A new model for the bins of ``vocab``.

        Parameters
        ----------
        vocab
            The bins (e.g. ``Vocabulary.from_bins("hg38", 5000)``); ``<eos_g>`` tokens are
            added for the groups.
        config
            Architecture switches (default :class:`MaskedBinConfig`); ``config_kwargs``
            override fields.
        bin_classes, class_names
            Region class of every bin and the class names: one ``<eos>`` per class
            (``group_by="class"``). Default: one ``<eos>`` per chromosome of ``vocab``
            (Ge 2025's 23 human groups: bins of chr1-22 and chrX, e.g.
            ``Vocabulary.from_bins("hg38", 5000, chroms=[f"chr{i}" for i in range(1, 23)] + ["chrX"])``).
        dna_embeddings
            Optional (n_bins, d_dna) or (V, d_dna) per-bin DNA embedding table.

        Examples
        --------
        >>> v = Vocabulary(["chr1"] * 60 + ["chr2"] * 40, list(range(0, 300000, 5000)) +
        ...                list(range(0, 200000, 5000)), list(range(5000, 305000, 5000)) +
        ...                list(range(5000, 205000, 5000)))
        >>> model = MaskedBinForPretraining.from_vocab(v, hidden_size=32, num_layers=2,
        ...                                            num_heads=4, intermediate_size=64)
        >>> model.config.group_names, len(model.vocab)
        (['chr1', 'chr2'], 109)
        """
        full, groups, names = masked_bin_vocabulary(vocab, bin_classes, class_names)
        config = (config or MaskedBinConfig()).replace(**config_kwargs)
        dna = None
        if dna_embeddings is not None:
            dna = torch.as_tensor(np.asarray(dna_embeddings), dtype=torch.float32)
            if dna.ndim != 2 or dna.shape[0] not in (vocab.n_regions, len(full)):
                raise ValueError(f"dna_embeddings has shape {tuple(dna.shape)}; expected "
                                 f"({vocab.n_regions}, d_dna), one row per bin")
            dna = dna[: vocab.n_regions]
        n_buckets = 0
        if config.position_encoding == "genomic":
            n_buckets = int(_genome_positions(vocab, config.position_resolution).max(initial=0))
        config = config.replace(
            vocab_size=len(full), n_bins=vocab.n_regions, cls_token_id=full.token_id("<cls>"),
            pad_token_id=full.token_id("<pad>"),
            group_by="chromosome" if bin_classes is None else "class", group_names=names,
            eos_token_ids=[full.token_id(f"<eos_{g}>") for g in names],
            n_position_buckets=n_buckets,
            dna_embedding_dim=int(dna.shape[1]) if dna is not None else 0,
        )
        return cls(config, vocab=full, bin_groups=groups, dna_embeddings=dna)

    def _init_buffers(self, emb: MaskedBinEmbeddings, vocab, bin_groups, dna_embeddings) -> None:
        c = self.config
        if bin_groups is None and vocab is not None and c.group_by == "chromosome":
            bin_groups = _chrom_groups(vocab)[1]
        if bin_groups is not None:
            g = torch.as_tensor(np.asarray(bin_groups), dtype=torch.long)
            if g.shape != (c.n_bins,) or (len(g) and (g.min() < 0 or g.max() >= c.n_groups)):
                raise ValueError(f"bin_groups must be ({c.n_bins},) ints in [0, {c.n_groups})")
            emb.bin_groups.copy_(g)
        if emb.position_embeddings is not None and vocab is not None:
            pos = torch.from_numpy(_genome_positions(vocab, c.position_resolution))
            emb.bin_positions.copy_(pos.clamp(max=c.n_position_buckets))
        if dna_embeddings is not None:
            emb.dna_table.copy_(torch.as_tensor(dna_embeddings, dtype=emb.dna_table.dtype))

    @classmethod
    def _check_vocab(cls, d, meta, config, vocab) -> None:
        super()._check_vocab(d, meta, config, vocab)
        if vocab is None:
            raise VocabularyMismatchError(f"{d}: a masked-bin model folder needs its vocabulary "
                                          "(universe.bed.gz + vocab.json)")
        expected = {"<cls>": config.cls_token_id, "<pad>": config.pad_token_id,
                    **{f"<eos_{g}>": i for g, i in zip(config.group_names, config.eos_token_ids)}}
        for tok, i in expected.items():
            if tok not in vocab.special_tokens or vocab.token_id(tok) != i:
                raise VocabularyMismatchError(
                    f"{d}: config.json puts {tok} at id {i} but the vocabulary's special tokens "
                    f"are {vocab.special_tokens} after {vocab.n_regions:,} bins")

    @property
    def bin_groups(self) -> torch.Tensor:
        """(n_bins,) group of every bin."""
        return self._embeddings().bin_groups

    def collator(self, mask_ratio: float | None = None, max_length: int | None = None,
                 seed: int | None = None) -> MaskedBinCollator:
        """A :class:`MaskedBinCollator` for this model (pretraining batches)."""
        return MaskedBinCollator(self.config, self.bin_groups, mask_ratio, max_length, seed)

    def prepare_inputs(self, cells, max_length: int | None = None,
                       rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        """Inference inputs: full sentences (nothing removed) of cells given as token-id
        arrays or CSR; longer cells are subsampled to ``max_length``."""
        coll = MaskedBinCollator(self.config, self.bin_groups, mask_ratio=0.0, max_length=max_length)
        if rng is not None:
            coll.random.numpy = rng
        batch = collate_sentences(coll.sentences(as_token_lists(cells)), self.config.pad_token_id)
        return {k: batch[k] for k in ("input_ids", "attention_mask", "eos_positions") if k in batch}


class MaskedBinModel(_MaskedBinBase, nn.Module):
    """The masked-bin encoder: embeddings + pre-LN SDPA encoder -> hidden states (B, L, d)."""

    is_base_model = True

    def __init__(self, config: MaskedBinConfig, vocab: Vocabulary | None = None,
                 bin_groups=None, dna_embeddings=None):
        super().__init__()
        self.config = config
        self.vocab = vocab
        self.embeddings = MaskedBinEmbeddings(config)
        self.encoder = Encoder(config.num_layers, config.hidden_size, config.num_heads,
                               config.intermediate_size, config.dropout, config.activation,
                               config.norm_first, config.layer_norm_eps)
        self.apply(lambda m: init_weights(m, config.initializer_range))
        self._init_buffers(self.embeddings, vocab, bin_groups, dna_embeddings)

    def _embeddings(self) -> MaskedBinEmbeddings:
        return self.embeddings

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        """``input_ids`` (B, L), ``attention_mask`` (B, L) -> hidden states (B, L, d)."""
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_token_id
        return self.encoder(self.embeddings(input_ids), attention_mask)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              pooling: str | None = None, **_) -> torch.Tensor:
        """Cell embeddings (B, d): the ``<cls>`` output (``pooling="cls"``, default) or the
        mean over the sentence's bin tokens (``"mean"``; ``<cls>``/``<eos>`` excluded)."""
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_token_id
        hidden = self(input_ids, attention_mask)  # (B, L, D)
        pooling = pooling or self.config.pooling
        if pooling == "cls":
            return hidden[:, 0]
        if pooling == "mean":
            return mean_pool(hidden, attention_mask.bool() & (input_ids < self.config.n_bins))
        raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")


# -- decoder -------------------------------------------------------------------------------
class BinStateDecoder(nn.Module):
    """The bin-wise MLP: ``[eos_g ; bin]`` -> hidden -> 3 state logits, with its first layer
    split into an eos part (``eos_in``, carries the bias) and a bin part (``bin_in``)."""

    def __init__(self, config: MaskedBinConfig):
        super().__init__()
        c = config
        small = c.decoder_input == "small"
        self.compress = nn.Linear(c.hidden_size, c.decoder_dim) if small else nn.Identity()
        # the bin part of the input: E1 row (factorised, small), a projection of the full
        # embedding row (full embedding, small), or the d-wide bin embedding (full input)
        self.bin_proj = (nn.Linear(c.hidden_size, c.decoder_dim, bias=False)
                         if small and c.embedding == "full" else None)
        eos_w = c.decoder_dim if small else c.hidden_size
        bin_w = (c.embedding_dim if c.embedding == "factorized" else c.decoder_dim) if small else c.hidden_size
        self.eos_in = nn.Linear(eos_w, c.decoder_hidden_size)
        self.bin_in = nn.Linear(bin_w, c.decoder_hidden_size, bias=False)
        self.act = nn.GELU()
        self.out = nn.Linear(c.decoder_hidden_size, N_STATES)

    def eos_part(self, group_states: torch.Tensor) -> torch.Tensor:
        """(B, G, d) -> (B, G, H)."""
        return self.eos_in(self.compress(group_states))

    def bin_part(self, bin_features: torch.Tensor) -> torch.Tensor:
        """(N, w) -> (N, H): computed once per step for all bins."""
        if self.bin_proj is not None:
            bin_features = self.bin_proj(bin_features)
        return self.bin_in(bin_features)

    def head(self, pre: torch.Tensor) -> torch.Tensor:
        """Hidden pre-activations (..., H) -> logits (..., 3)."""
        return self.out(self.act(pre))

    def first_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The unsplit first layer acting on ``[eos ; bin]``: weight (H, eos_w + bin_w), bias."""
        return torch.cat([self.eos_in.weight, self.bin_in.weight], dim=1), self.eos_in.bias


@dataclass
class MaskedBinOutput:
    """Outputs of :class:`MaskedBinForPretraining`.

    ``loss`` = decoder loss + weight x supervised losses (None without targets);
    ``logits`` (B, n_bins, 3) only with ``return_logits=True``; ``group_states`` (B, G, d)
    are the ``<eos_g>`` outputs (or cross-attention outputs); ``hidden_states`` (B, L, d).
    """

    loss: torch.Tensor | None
    decoder_loss: torch.Tensor | None
    organ_loss: torch.Tensor | None
    cell_type_loss: torch.Tensor | None
    logits: torch.Tensor | None
    organ_logits: torch.Tensor | None
    cell_type_logits: torch.Tensor | None
    group_states: torch.Tensor
    hidden_states: torch.Tensor


def _mlp_head(d: int, n: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, n))


class MaskedBinForPretraining(_MaskedBinBase, nn.Module):
    """The masked-bin model with its bin-state decoder (and optional supervised heads).

    Parameters
    ----------
    config
        A :class:`MaskedBinConfig` (build one with :meth:`from_vocab`).
    vocab
        The model's vocabulary (bins + special tokens + ``<eos_g>`` tokens).
    bin_groups
        (n_bins,) group of every bin (derived from ``vocab`` for chromosome groups).
    dna_embeddings
        (n_bins, d_dna) DNA embedding table when ``config.dna_embedding_dim``.

    Examples
    --------
    >>> v = Vocabulary(["chr1"] * 60 + ["chr2"] * 40, list(range(0, 300000, 5000)) +
    ...                list(range(0, 200000, 5000)), list(range(5000, 305000, 5000)) +
    ...                list(range(5000, 205000, 5000)))
    >>> model = MaskedBinForPretraining.from_vocab(v, hidden_size=32, num_layers=2,
    ...                                            num_heads=4, intermediate_size=64)
    >>> batch = model.collator(seed=0)([np.arange(0, 80, 3), np.arange(10, 30)])
    >>> out = model(**batch)
    >>> out.loss.ndim, out.group_states.shape
    (0, torch.Size([2, 2, 32]))
    """

    def __init__(self, config: MaskedBinConfig, vocab: Vocabulary | None = None,
                 bin_groups=None, dna_embeddings=None):
        super().__init__()
        c = self.config = config
        self.vocab = vocab
        self.masked_bin = MaskedBinModel(config, vocab=None)
        if c.decoder == "cross_attention":
            self.eos_queries = nn.Parameter(torch.zeros(c.n_groups, c.hidden_size))
            self.cross_blocks = nn.ModuleList(
                CrossAttentionBlock(c.hidden_size, c.num_heads, c.intermediate_size, c.dropout,
                                    c.activation, c.layer_norm_eps)
                for _ in range(c.cross_attention_layers))
            self.cross_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.decoder = BinStateDecoder(config)
        self.organ_head = _mlp_head(c.hidden_size, c.num_organs) if c.num_organs else None
        self.cell_type_head = _mlp_head(c.hidden_size, c.num_cell_types) if c.num_cell_types else None
        for m in (self.decoder, getattr(self, "cross_blocks", None), self.organ_head, self.cell_type_head):
            if m is not None:
                m.apply(lambda mod: init_weights(mod, c.initializer_range))
        if c.decoder == "cross_attention":
            nn.init.normal_(self.eos_queries, std=c.initializer_range)
        self._init_buffers(self.masked_bin.embeddings, vocab, bin_groups, dna_embeddings)

    def _embeddings(self) -> MaskedBinEmbeddings:
        return self.masked_bin.embeddings

    # -- pieces ------------------------------------------------------------------------
    def group_states(self, hidden: torch.Tensor, attention_mask: torch.Tensor,
                     eos_positions: torch.Tensor | None) -> torch.Tensor:
        """(B, G, d): the ``<eos_g>`` outputs (MLP decoder) or the cross-attention outputs."""
        if self.config.decoder == "mlp":
            if eos_positions is None:
                raise ValueError("the MLP decoder needs eos_positions (from the collator)")
            idx = eos_positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])  # (B, G, D)
            return hidden.gather(1, idx)
        mask = key_padding_mask(attention_mask)
        q = self.eos_queries.unsqueeze(0).expand(hidden.shape[0], -1, -1).to(hidden.dtype)
        for block in self.cross_blocks:
            q = block(q, hidden, mask)
        return self.cross_norm(q)

    def bin_features(self) -> torch.Tensor:
        """(n_bins, w): the decoder's per-bin input (E1 rows, or the d-wide bin embedding)."""
        emb = self.masked_bin.embeddings
        n = self.config.n_bins
        if self.config.decoder_input == "full":
            return emb.token_vectors(torch.arange(n, device=emb.bin_groups.device))
        return emb.bin_embeddings.weight[:n]

    def state_labels(self, target_ids: torch.Tensor, target_states: torch.Tensor) -> torch.Tensor:
        """Dense (B, n_bins) uint8 states from the padded open-bin targets."""
        b = target_ids.shape[0]
        labels = torch.zeros(b, self.config.n_bins, dtype=torch.uint8, device=target_ids.device)
        valid = target_ids >= 0
        rows = torch.arange(b, device=target_ids.device).unsqueeze(1).expand_as(target_ids)
        labels[rows[valid], target_ids[valid]] = target_states[valid].to(torch.uint8)
        return labels

    def all_logits(self, group_states: torch.Tensor) -> torch.Tensor:
        """(B, n_bins, 3) logits of every bin (memory B x n_bins x hidden: small vocabularies)."""
        eos = self.decoder.eos_part(group_states)  # (B, G, H)
        bins = self.decoder.bin_part(self.bin_features())  # (N, H)
        return self.decoder.head(eos[:, self.bin_groups] + bins.unsqueeze(0))

    def decoder_loss(self, group_states: torch.Tensor, labels: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """Cross-entropy of the bin states: over all bins (chunked), or over the open bins
        plus sampled closed bins (``closed_bin_sampling``)."""
        eos = self.decoder.eos_part(group_states)  # (B, G, H)
        bins = self.decoder.bin_part(self.bin_features())  # (N, H), once per step
        if self.config.closed_bin_sampling:
            cell, bin_ = self._sample_pairs(labels, generator)
            return self._pairs_loss(eos, bins, cell, bin_, labels[cell, bin_])
        return self._all_bins_loss(eos, bins, labels)

    def _chunk_ce(self, eos: torch.Tensor, bins: torch.Tensor, cells: torch.Tensor | None,
                  groups: torch.Tensor, bin_ids: torch.Tensor | slice, y: torch.Tensor
                  ) -> torch.Tensor:
        """Summed cross-entropy of one chunk. The gathers happen inside, so a checkpointed
        chunk keeps only its index tensors for the backward pass, never (B, chunk, H)."""
        if cells is None:  # all bins: every cell x this chunk of bins
            pre = eos[:, groups] + bins[bin_ids].unsqueeze(0)  # (B, c, H)
        else:  # (cell, bin) pairs
            pre = eos[cells, groups] + bins[bin_ids]  # (P, H)
        logits = self.decoder.head(pre)  # (..., 3)
        return F.cross_entropy(logits.reshape(-1, N_STATES).float(), y.reshape(-1).long(),
                               reduction="sum")

    def _run_chunk(self, *args) -> torch.Tensor:
        if torch.is_grad_enabled():
            return checkpoint(self._chunk_ce, *args, use_reentrant=False)
        return self._chunk_ce(*args)

    def _all_bins_loss(self, eos: torch.Tensor, bins: torch.Tensor, labels: torch.Tensor):
        groups = self.bin_groups
        n, step = self.config.n_bins, self.config.decoder_chunk_size
        total = eos.new_zeros((), dtype=torch.float32)
        for s in range(0, n, step):
            chunk = slice(s, s + step)
            total = total + self._run_chunk(eos, bins, None, groups[chunk], chunk, labels[:, chunk])
        return total / labels.numel()

    def _pairs_loss(self, eos, bins, cell, bin_, y):
        groups = self.bin_groups
        step = self.config.decoder_chunk_size
        total = eos.new_zeros((), dtype=torch.float32)
        for s in range(0, len(cell), step):
            c, b = cell[s: s + step], bin_[s: s + step]
            total = total + self._run_chunk(eos, bins, c, groups[b], b, y[s: s + step])
        return total / max(len(cell), 1)

    def _sample_pairs(self, labels: torch.Tensor, generator=None):
        """(cell, bin) pairs: every open bin, plus ``closed_bins_per_open`` x as many bins
        drawn uniformly per cell and kept when closed."""
        dev = labels.device
        open_cell, open_bin = torch.nonzero(labels != NOT_IN_CELL, as_tuple=True)
        n_open = torch.bincount(open_cell, minlength=labels.shape[0])  # (B,)
        k = torch.ceil(n_open.float() * self.config.closed_bins_per_open).long()
        kmax = max(int(k.max()), 1)
        draws = torch.randint(0, self.config.n_bins, (labels.shape[0], kmax), device=dev,
                              generator=generator)
        rows = torch.arange(labels.shape[0], device=dev).unsqueeze(1).expand_as(draws)
        keep = (torch.arange(kmax, device=dev).unsqueeze(0) < k.unsqueeze(1)) \
            & (labels[rows, draws] == NOT_IN_CELL)
        return torch.cat([open_cell, rows[keep]]), torch.cat([open_bin, draws[keep]])

    # -- forward -----------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                eos_positions: torch.Tensor | None = None, target_ids: torch.Tensor | None = None,
                target_states: torch.Tensor | None = None, organ_labels: torch.Tensor | None = None,
                cell_type_labels: torch.Tensor | None = None, return_logits: bool = False,
                generator: torch.Generator | None = None) -> MaskedBinOutput:
        """Encode a batch from :class:`MaskedBinCollator` and compute the losses it has
        targets for."""
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_token_id
        hidden = self.masked_bin(input_ids, attention_mask)  # (B, L, D)
        groups = self.group_states(hidden, attention_mask, eos_positions)  # (B, G, D)
        dec_loss = None
        if target_ids is not None:
            labels = self.state_labels(target_ids, target_states)
            dec_loss = self.decoder_loss(groups, labels, generator)
        cls = hidden[:, 0]  # (B, D)
        organ_logits = self.organ_head(cls) if self.organ_head is not None else None
        type_logits = self.cell_type_head(cls) if self.cell_type_head is not None else None
        organ_loss = _supervised(organ_logits, organ_labels, "organ")
        type_loss = _supervised(type_logits, cell_type_labels, "cell_type")
        parts = [x for x in (dec_loss,) if x is not None]
        parts += [self.config.supervised_loss_weight * x for x in (organ_loss, type_loss) if x is not None]
        return MaskedBinOutput(
            loss=sum(parts) if parts else None, decoder_loss=dec_loss, organ_loss=organ_loss,
            cell_type_loss=type_loss,
            logits=self.all_logits(groups) if return_logits else None,
            organ_logits=organ_logits, cell_type_logits=type_logits,
            group_states=groups, hidden_states=hidden)

    def embed(self, input_ids, attention_mask=None, pooling=None, **_) -> torch.Tensor:
        """Cell embeddings (B, d), as :meth:`MaskedBinModel.embed`."""
        return self.masked_bin.embed(input_ids, attention_mask, pooling)


def _supervised(logits, labels, name):
    if labels is None:
        return None
    if logits is None:
        raise ValueError(f"{name} labels given but the model has no {name} head "
                         f"(set num_{name}s in the config)")
    if bool((labels == -100).all()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=-100)


__all__ = ["BinStateDecoder", "MaskedBinEmbeddings", "MaskedBinForPretraining", "MaskedBinModel",
           "MaskedBinOutput", "masked_bin_vocabulary"]
