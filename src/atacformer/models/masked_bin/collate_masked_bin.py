"""Cell sentences of the masked-bin model (Ge 2025) and their training targets.

Sentence: ``<cls>``, then each group's (chromosome's, or region class's) open bins in
genomic order, each group followed by its ``<eos_g>`` (every group's ``<eos_g>`` is present,
also when the cell has no open bin there). The cross-attention decoder's sentence is
``<cls>`` + the bins, without ``<eos>`` tokens.

With mask ratio r, ``round(r * n)`` of the cell's n open bins, drawn at random, are removed
from the sentence. A sentence longer than ``max_length`` keeps a random subset of the
remaining bins. Targets: every open bin of the cell with state 1 (in the sentence) or 2 (in
the cell but not in the sentence: removed, or dropped by the subsampling); all other bins
have state 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from atacformer.models._collate import CollatorRandom, as_token_lists, check_token_range
from atacformer.models.masked_bin.configuration_masked_bin import MaskedBinConfig

NOT_IN_CELL, IN_SENTENCE, REMOVED = 0, 1, 2


@dataclass
class Sentence:
    """One cell's sentence: ``tokens`` (L,), ``eos_positions`` (G,) or None, ``target_ids``
    (n,) the cell's open bins and ``target_states`` (n,) their states (1 or 2)."""

    tokens: np.ndarray
    eos_positions: np.ndarray | None
    target_ids: np.ndarray
    target_states: np.ndarray


def build_sentence(bins: np.ndarray, bin_groups: np.ndarray, n_groups: int, cls_token_id: int,
                   eos_token_ids: np.ndarray | None, mask_ratio: float, max_length: int,
                   rng: np.random.Generator) -> Sentence:
    """Build one cell's sentence (see the module docstring).

    Parameters
    ----------
    bins
        The cell's open bins (token ids < n_bins; duplicates are merged).
    bin_groups
        (n_bins,) group of every bin.
    n_groups
        Number of groups.
    cls_token_id
        Id of ``<cls>``.
    eos_token_ids
        (n_groups,) ids of the ``<eos_g>`` tokens, or None for a sentence without them.
    mask_ratio
        Fraction of open bins removed.
    max_length
        Longest sentence.
    rng
        Random generator.
    """
    bins = np.unique(np.asarray(bins, dtype=np.int64))
    n = len(bins)
    in_sentence = np.ones(n, dtype=bool)
    n_remove = int(round(mask_ratio * n))
    if n_remove:
        in_sentence[rng.choice(n, size=n_remove, replace=False)] = False
    n_special = 1 + (n_groups if eos_token_ids is not None else 0)
    budget = max_length - n_special
    if budget < 0:
        raise ValueError(f"max_length {max_length} cannot hold <cls> and {n_groups} <eos> tokens")
    kept = np.flatnonzero(in_sentence)
    if len(kept) > budget:  # subsample: the dropped bins become state 2, like removed ones
        drop = rng.choice(len(kept), size=len(kept) - budget, replace=False)
        in_sentence[kept[drop]] = False
        kept = np.flatnonzero(in_sentence)
    kept_bins = bins[kept]
    groups = bin_groups[kept_bins]
    order = np.lexsort((kept_bins, groups))  # by group, then genomic (id) order
    kept_bins, groups = kept_bins[order], groups[order]
    if eos_token_ids is None:
        tokens = np.concatenate([[cls_token_id], kept_bins]).astype(np.int64)
        eos_positions = None
    else:
        counts = np.bincount(groups, minlength=n_groups)
        eos_positions = np.cumsum(counts + 1)  # <cls> at 0, then each group's bins and its <eos>
        tokens = np.empty(1 + len(kept_bins) + n_groups, dtype=np.int64)
        is_bin = np.ones(len(tokens), dtype=bool)
        is_bin[0] = False
        is_bin[eos_positions] = False
        tokens[0] = cls_token_id
        tokens[eos_positions] = eos_token_ids
        tokens[is_bin] = kept_bins
    states = np.where(in_sentence, IN_SENTENCE, REMOVED).astype(np.int64)
    return Sentence(tokens, eos_positions, bins, states)


class MaskedBinCollator:
    """Cells -> a padded masked-bin batch.

    Parameters
    ----------
    config
        The model's :class:`MaskedBinConfig`.
    bin_groups
        (n_bins,) group of every bin (``model.bin_groups``).
    mask_ratio, max_length
        Override the config's values (``mask_ratio=0`` for inference).
    seed
        Seed of the collator's random generator (in ``DataLoader`` workers the stream also
        depends on the worker's seed).

    A batch item is a cell's token ids, or a dict with ``"input_ids"`` and optionally
    ``"organ"`` / ``"cell_type"`` integer labels (-100 = unknown). The batch has
    ``input_ids`` / ``attention_mask`` (B, L), ``eos_positions`` (B, G) (MLP decoder),
    ``target_ids`` (B, M) (-1 = padding), ``target_states`` (B, M) and, when given,
    ``organ_labels`` / ``cell_type_labels`` (B,).
    """

    def __init__(self, config: MaskedBinConfig, bin_groups, mask_ratio: float | None = None,
                 max_length: int | None = None, seed: int | None = None):
        self.config = config
        self.bin_groups = np.asarray(bin_groups.cpu() if torch.is_tensor(bin_groups) else bin_groups,
                                     dtype=np.int64)
        if self.bin_groups.shape != (config.n_bins,):
            raise ValueError(f"bin_groups has shape {self.bin_groups.shape}, expected ({config.n_bins},)")
        self.mask_ratio = config.mask_ratio if mask_ratio is None else mask_ratio
        self.max_length = max_length or config.max_length
        self.eos = np.asarray(config.eos_token_ids, dtype=np.int64) if config.eos_in_sentence else None
        self.random = CollatorRandom(seed)

    def sentences(self, cells) -> list[Sentence]:
        token_lists = as_token_lists(cells)
        check_token_range(token_lists, self.config.n_bins, what="bin")
        return [build_sentence(t, self.bin_groups, self.config.n_groups, self.config.cls_token_id,
                               self.eos, self.mask_ratio, self.max_length, self.random.numpy)
                for t in token_lists]

    def __call__(self, batch) -> dict[str, torch.Tensor]:
        labels: dict[str, list[int]] = {"organ": [], "cell_type": []}
        cells = []
        for item in batch:
            if isinstance(item, dict):
                cells.append(item["input_ids"])
                for k in labels:
                    labels[k].append(int(item.get(k, -100)))
            else:
                cells.append(item)
        out = collate_sentences(self.sentences(cells), self.config.pad_token_id)
        for k, v in labels.items():
            if v and any(x != -100 for x in v):
                out[f"{k}_labels"] = torch.tensor(v, dtype=torch.long)
        return out


def collate_sentences(sentences: list[Sentence], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad sentences and targets into tensors (see :class:`MaskedBinCollator`)."""
    b = len(sentences)
    n = max(len(s.tokens) for s in sentences)
    m = max(max(len(s.target_ids) for s in sentences), 1)
    ids = np.full((b, n), pad_token_id, dtype=np.int64)
    mask = np.zeros((b, n), dtype=bool)
    t_ids = np.full((b, m), -1, dtype=np.int64)
    t_states = np.zeros((b, m), dtype=np.int64)
    for i, s in enumerate(sentences):
        ids[i, : len(s.tokens)] = s.tokens
        mask[i, : len(s.tokens)] = True
        t_ids[i, : len(s.target_ids)] = s.target_ids
        t_states[i, : len(s.target_states)] = s.target_states
    out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
           "target_ids": torch.from_numpy(t_ids), "target_states": torch.from_numpy(t_states)}
    if sentences[0].eos_positions is not None:
        out["eos_positions"] = torch.from_numpy(np.stack([s.eos_positions for s in sentences]))
    return out
