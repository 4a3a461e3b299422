"""Cells -> one pretraining micro-batch, with every random choice drawn from a given generator.

The models' own collators (:class:`~atacformer.models.ReplacedTokenCollator`,
:class:`~atacformer.models.MaskedBinCollator`) re-seed themselves per data-loader worker,
which is right for inference but would make a training batch depend on how many workers
ran it. The builders here use the same model functions (:func:`pad_token_lists`,
:func:`replace_tokens`, :func:`build_sentence`, :func:`collate_sentences`) with a generator
derived from the batch's position in the run (seed, epoch, step, part), so a batch is the
same whichever worker, rank layout or resumed process builds it.

Context handling. A cell longer than the context keeps a ``random`` subset of its tokens
(LeRoy 2025's default) or its ``first`` C tokens in genomic order; tokens then stay in
``genomic`` order or are ``shuffled`` (masked-bin: within each ``<eos>`` group, since the
sentence's group structure is the model's input format; without position encodings the
encoder is permutation-equivariant, so for it the order changes nothing but the batch
layout).
"""

from __future__ import annotations

import numpy as np
import torch

from atacformer.models import AtacformerConfig, MaskedBinConfig
from atacformer.models._collate import as_token_lists, pad_token_lists
from atacformer.models.atacformer.modeling_atacformer import replace_tokens
from atacformer.models.masked_bin.collate_masked_bin import (
    REMOVED, Sentence, build_sentence, collate_sentences,
)


def torch_generator(rng: np.random.Generator, device="cpu") -> torch.Generator:
    """A torch generator seeded from ``rng`` (consumes one draw)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(rng.integers(0, 2**63 - 1)))
    return g


def _first_or_random(tokens: np.ndarray, c: int, context: str, rng: np.random.Generator) -> np.ndarray:
    if len(tokens) <= c:
        return tokens
    if context == "first":
        return tokens[:c]
    return np.sort(rng.choice(tokens, size=c, replace=False))


class ReplacedTokenBatcher:
    """Micro-batches for :class:`~atacformer.models.AtacformerForReplacedTokenDetection`.

    Parameters
    ----------
    config
        The model's config (``max_length``, ``pad_token_id``, ``n_regions``, ``replace_prob``).
    context, order
        See the module docstring.

    Examples
    --------
    >>> batch, weight = batcher(X_csr, np.random.default_rng(0))  # doctest: +SKIP
    """

    def __init__(self, config: AtacformerConfig, context: str = "random", order: str = "genomic",
                 token_probs=None):
        self.config, self.context, self.order = config, context, order
        self.token_probs = None if token_probs is None else torch.as_tensor(token_probs, dtype=torch.float32)

    def effective_lengths(self, n_tokens: np.ndarray) -> np.ndarray:
        """Sequence length of cells with ``n_tokens`` tokens (for length bucketing)."""
        return np.minimum(n_tokens, self.config.max_length)

    def __call__(self, X, rng: np.random.Generator, labels: dict | None = None
                 ) -> tuple[dict[str, torch.Tensor], int]:
        """``(batch, weight)``; ``weight`` = the positions the loss averages over."""
        full = as_token_lists(X)
        cells = [_first_or_random(t, self.config.max_length, self.context, rng) for t in full]
        if self.order == "shuffled":
            cells = [rng.permutation(t) for t in cells]
        input_ids, attention_mask = pad_token_lists(cells, self.config.pad_token_id)
        corrupted, targets = replace_tokens(input_ids, attention_mask, self.config.replace_prob,
                                            self.config.n_regions, torch_generator(rng),
                                            token_probs=self.token_probs)
        weight = int(((targets != -100) & attention_mask).sum())
        batch = {"input_ids": corrupted, "attention_mask": attention_mask, "labels": targets}
        if self.config.contrastive_weight > 0:  # two disjoint token subsets of each cell
            from atacformer.models import two_views

            va, vb = two_views(full, rng, max_length=self.config.max_length)
            batch["view_a"] = pad_token_lists(va, self.config.pad_token_id)[0]
            batch["view_b"] = pad_token_lists(vb, self.config.pad_token_id)[0]
        return batch, weight


class ProfileBatcher:
    """Micro-batches for :class:`~atacformer.models.AtacformerForProfileReconstruction`: each
    cell's tokens with a fraction ``hide_prob`` hidden (then at most ``max_length`` kept), and
    every open region of the cell as the reconstruction target.

    Examples
    --------
    >>> batch, weight = batcher(X_csr, np.random.default_rng(0))  # doctest: +SKIP
    """

    def __init__(self, config: AtacformerConfig, context: str = "random", order: str = "genomic"):
        self.config, self.context, self.order = config, context, order

    def effective_lengths(self, n_tokens: np.ndarray) -> np.ndarray:
        kept = n_tokens - np.floor(self.config.hide_prob * n_tokens).astype(np.int64)
        return np.minimum(np.maximum(kept, np.minimum(n_tokens, 1)), self.config.max_length)

    def __call__(self, X, rng: np.random.Generator, labels: dict | None = None
                 ) -> tuple[dict[str, torch.Tensor], int]:
        """``(batch, weight)``; ``weight`` = cells (the loss is a mean per cell)."""
        import scipy.sparse as sp

        x = sp.csr_matrix(X)
        x.eliminate_zeros()
        x.sort_indices()
        n, lengths = x.shape[0], np.diff(x.indptr)
        cell = np.repeat(np.arange(n), lengths)
        # hide exactly floor(hide_prob * n) tokens of each cell (one always stays visible): rank
        # each token by a random key within its cell and keep the lowest-ranked ones
        n_keep = np.maximum(lengths - np.floor(self.config.hide_prob * lengths).astype(np.int64),
                            np.minimum(lengths, 1))
        n_keep = np.minimum(n_keep, self.config.max_length)
        if self.context == "first":  # the first tokens in genomic order, not a random subset
            key = np.arange(len(cell), dtype=np.float64) - np.repeat(x.indptr[:-1], lengths)
        else:
            key = rng.random(len(cell))
        order = np.lexsort((key, cell))
        rank = np.empty(len(cell), np.int64)
        rank[order] = np.arange(len(cell)) - np.repeat(x.indptr[:-1], lengths)
        keep = rank < np.repeat(n_keep, lengths)
        ids, kept_cell = x.indices[keep].astype(np.int64), cell[keep]
        if self.order == "shuffled":
            perm = np.lexsort((rng.random(len(ids)), kept_cell))
            ids = ids[perm]
        input_ids = _pad_rows(ids, n_keep, self.config.pad_token_id)
        target_ids = _pad_rows(x.indices.astype(np.int64), lengths, -1)
        return {"input_ids": input_ids, "attention_mask": input_ids != self.config.pad_token_id,
                "target_ids": target_ids}, n


class FinetuneBatcher:
    """Micro-batches for :class:`~atacformer.models.AtacformerForFinetuning`: the cells'
    tokens (at most ``max_length``; with ``batch-adversarial`` a fraction ``hide_prob``
    hidden and the whole profile as the reconstruction target, as :class:`ProfileBatcher`),
    the label codes (``labels``, ``batch_labels``) and uniform draws for random triplet picks.
    """

    def __init__(self, config: AtacformerConfig, context: str = "random", order: str = "genomic"):
        adversarial = config.finetune_objective == "batch-adversarial"
        self.targets = adversarial
        self.tokens = ProfileBatcher(config if adversarial else config.replace(hide_prob=0.0), context, order)

    def effective_lengths(self, n_tokens: np.ndarray) -> np.ndarray:
        return self.tokens.effective_lengths(n_tokens)

    def __call__(self, X, rng: np.random.Generator, labels: dict | None = None
                 ) -> tuple[dict[str, torch.Tensor], int]:
        """``(batch, weight)``; ``weight`` = cells."""
        batch, n = self.tokens(X, rng)
        if not self.targets:
            del batch["target_ids"]
        for name, codes in (labels or {}).items():
            batch[name] = torch.as_tensor(np.asarray(codes, dtype=np.int64))
        batch["draws"] = torch.from_numpy(rng.random((n, 2)).astype(np.float32))
        return batch, n


def _pad_rows(values: np.ndarray, lengths: np.ndarray, pad: int) -> torch.Tensor:
    """Consecutive runs of ``values`` (``lengths`` each) as rows of a padded (B, L) tensor."""
    width = max(int(lengths.max()) if len(lengths) else 0, 1)
    out = np.full((len(lengths), width), pad, dtype=np.int64)
    col = np.arange(len(values)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[np.repeat(np.arange(len(lengths)), lengths), col] = values
    return torch.from_numpy(out)


def truncate_sentence(s: Sentence, max_length: int, n_bins: int) -> Sentence:
    """Keep the first bins of a sentence (in sentence order) so that it fits ``max_length``;
    the bins left out become state 2 (in the cell, not in the sentence)."""
    tokens = s.tokens
    if len(tokens) <= max_length:
        return s
    is_bin = tokens < n_bins
    bin_pos = np.flatnonzero(is_bin)
    budget = max_length - (len(tokens) - len(bin_pos))
    if budget < 0:
        raise ValueError(f"max_length {max_length} cannot hold the sentence's special tokens")
    drop = bin_pos[budget:]
    keep = np.ones(len(tokens), dtype=bool)
    keep[drop] = False
    new = tokens[keep]
    eos = None
    if s.eos_positions is not None:
        eos = np.flatnonzero(new >= n_bins)[1:]  # specials after <cls> are the <eos_g> tokens
    states = s.target_states.copy()
    states[np.isin(s.target_ids, tokens[drop])] = REMOVED
    return Sentence(new, eos, s.target_ids, states)


def shuffle_within_groups(s: Sentence, n_bins: int, rng: np.random.Generator) -> Sentence:
    """Permute the bins of each group (between consecutive special tokens)."""
    tokens = s.tokens.copy()
    pos = np.flatnonzero(tokens < n_bins)
    segment = np.cumsum(tokens >= n_bins)[pos]
    order = np.lexsort((rng.random(len(pos)), segment))
    tokens[pos] = tokens[pos][order]
    return Sentence(tokens, s.eos_positions, s.target_ids, s.target_states)


class MaskedBinBatcher:
    """Micro-batches for :class:`~atacformer.models.MaskedBinForPretraining`.

    Parameters
    ----------
    config
        The model's :class:`~atacformer.models.MaskedBinConfig`.
    bin_groups
        (n_bins,) group of every bin (``model.bin_groups``).
    context, order
        See the module docstring.
    """

    def __init__(self, config: MaskedBinConfig, bin_groups, context: str = "random", order: str = "genomic"):
        self.config, self.context, self.order = config, context, order
        self.bin_groups = np.asarray(bin_groups, dtype=np.int64)
        self.eos = np.asarray(config.eos_token_ids, dtype=np.int64) if config.eos_in_sentence else None
        self.n_special = 1 + (config.n_groups if config.eos_in_sentence else 0)

    def effective_lengths(self, n_tokens: np.ndarray) -> np.ndarray:
        kept = n_tokens - np.round(self.config.mask_ratio * n_tokens).astype(np.int64)
        return np.minimum(kept + self.n_special, self.config.max_length)

    def __call__(self, X, rng: np.random.Generator, labels: dict | None = None
                 ) -> tuple[dict[str, torch.Tensor], int]:
        """``(batch, weight)``; ``weight`` = cells (the decoder loss is a mean per cell)."""
        c = self.config
        sentences = []
        for t in as_token_lists(X):
            if self.context == "random":
                s = build_sentence(t, self.bin_groups, c.n_groups, c.cls_token_id, self.eos,
                                   c.mask_ratio, c.max_length, rng)
            else:
                s = build_sentence(t, self.bin_groups, c.n_groups, c.cls_token_id, self.eos,
                                   c.mask_ratio, len(t) + self.n_special, rng)
                s = truncate_sentence(s, c.max_length, c.n_bins)
            if self.order == "shuffled":
                s = shuffle_within_groups(s, c.n_bins, rng)
            sentences.append(s)
        batch = collate_sentences(sentences, c.pad_token_id)
        for name, codes in (labels or {}).items():
            batch[f"{name}_labels"] = torch.as_tensor(np.asarray(codes, dtype=np.int64))
        return batch, len(sentences)


class CraftBatcher:
    """Micro-batches for :class:`~atacformer.models.CraftModel`: each cell's ATAC tokens (a
    fraction ``hide_prob`` of the ATAC config hidden, then at most ``max_length``), its RNA
    as ranked gene tokens (:func:`~atacformer.models.craft.rank_genes`) of counts thinned
    binomially to a fraction ``1 - rna_thinning``, and, for the RNA decoder, its full
    log-normalised expression. ``labels["rna"]`` holds the cells' RNA counts (CSR).

    Both corruptions are augmentations: a pair must be recognised from two partial views,
    not from the exact set of a cell's regions and genes (without them a CRAFT model
    memorises its training pairs and matches held-out cells at chance).
    """

    def __init__(self, model, context: str = "random", order: str = "genomic"):
        c = model.config
        self.tokens = ProfileBatcher(model.atacformer.config.replace(hide_prob=c.atac_hide_prob), context, order)
        self.thinning = c.rna_thinning
        self.config = c
        self.medians = model.gene_medians.detach().cpu().numpy()
        self.impute = bool(c.impute_weight)

    def effective_lengths(self, n_tokens: np.ndarray) -> np.ndarray:
        return self.tokens.effective_lengths(n_tokens)

    def __call__(self, X, rng: np.random.Generator, labels: dict | None = None
                 ) -> tuple[dict[str, torch.Tensor], int]:
        """``(batch, weight)``; ``weight`` = cells."""
        from atacformer.models.craft import log_normalise
        from atacformer.models.craft.modeling_craft import rna_inputs

        batch, n = self.tokens(X, rng)
        del batch["target_ids"]
        rna = labels["rna"]
        seen = rna
        if self.thinning:
            seen = rna.copy()
            seen.data = rng.binomial(seen.data.astype(np.int64), 1.0 - self.thinning).astype(np.float32)
            seen.eliminate_zeros()
        batch["rna_ids"], batch["rna_mask"] = rna_inputs(seen, self.medians, self.config)
        if self.impute:
            batch["rna_targets"] = torch.from_numpy(log_normalise(rna))
        return batch, n


def make_batcher(model, context: str, order: str, token_probs=None):
    """The batcher for a pretraining model (``token_probs``: replacement distribution of
    replaced-token detection, default uniform)."""
    from atacformer.models import AtacformerForFinetuning, AtacformerForProfileReconstruction
    from atacformer.models import MultimodalForMaskedValues
    from atacformer.models.craft import CraftModel
    from atacformer.train.collate_multimodal import MultimodalBatcher

    if isinstance(model, CraftModel):
        return CraftBatcher(model, context, order)
    if isinstance(model, MultimodalForMaskedValues):
        return MultimodalBatcher(model.config)

    if isinstance(model.config, MaskedBinConfig):
        return MaskedBinBatcher(model.config, model.bin_groups.cpu().numpy(), context, order)
    if isinstance(model, AtacformerForFinetuning):
        return FinetuneBatcher(model.config, context, order)
    if isinstance(model, AtacformerForProfileReconstruction):
        return ProfileBatcher(model.config, context, order)
    return ReplacedTokenBatcher(model.config, context, order, token_probs)
