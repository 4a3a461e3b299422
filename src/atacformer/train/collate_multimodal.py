"""Paired RNA + ATAC cells -> one micro-batch of the multimodal model, every random choice drawn
from the given generator (as the other batchers of :mod:`atacformer.train.collate`).

Input contract. ``__call__(X, rng, labels)``: ``X`` (the micro-batch's ATAC region tokens) is
not read; ``labels["rna"]`` and ``labels["gene_activity"]`` are scipy CSR matrices, the
micro-batch's cells x ``config.n_genes`` genes, raw RNA counts and ATAC gene-activity values
over the model's genes in the same order (``config.gene_names``). Either may be missing (an
RNA-only or ATAC-only corpus); the batcher then draws only the kinds it can build.

Batch kinds. Each micro-batch is RNA-only, ATAC-only or paired (the thesis alternates the
three at each step). The kind is drawn uniformly from ``kinds`` with the micro-batch's own
generator: the kinds are balanced in expectation, and a micro-batch is the same whichever
worker, rank layout or resumed process builds it. A fixed cycle would need the step number,
which a batcher does not see (and under gradient accumulation the parts of one step would all
share a kind).

Tokens and masking. Each cell's non-zero genes become tokens (the ``max_genes`` of highest
normalised value when it has more; :func:`~atacformer.models.multimodal.gene_tokens`), with
the value bins of the config's fitted binning. Of a cell's n tokens, ``round(mask_ratio * n)``
(at least one when n >= 2, never all of them) drawn at random have their value replaced by
``<mask>``; their targets are the true bins, every other position's -100. The loss weight is
the number of masked positions (the loss is a mean over them). Paired batches also carry
``rna_profile`` (every gene's RNA bin, the imputation target) when ``imputation_weight > 0``,
and every batch carries its modalities' ``*_profile`` when ``profile_weight > 0``.
"""

from __future__ import annotations

import numpy as np
import torch

from atacformer.models.multimodal import MultimodalConfig, gene_tokens

#: Batch kinds: RNA only, ATAC (gene activity) only, both.
KINDS = ("rna", "atac", "paired")
_NEEDS = {"rna": ("rna",), "atac": ("gene_activity",), "paired": ("rna", "gene_activity")}


def mask_values(values: torch.Tensor, mask: torch.Tensor, ratio: float, mask_id: int,
                rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask ``round(ratio * n)`` of each cell's n real tokens (at least 1 when n >= 2, at most
    n - 1): ``(values with <mask> there, targets)``, targets = the true value at masked
    positions and -100 elsewhere.

    Examples
    --------
    >>> v, t = mask_values(torch.tensor([[1, 2, 3, 4]]), torch.ones(1, 4, dtype=torch.bool),
    ...                    0.5, 9, np.random.default_rng(0))
    >>> int((v == 9).sum()), int((t != -100).sum())
    (2, 2)
    """
    m = mask.numpy()
    n = m.sum(1)  # (B,)
    k = np.rint(ratio * n).astype(np.int64)
    if ratio > 0:
        k = np.maximum(k, (n >= 2).astype(np.int64))
    k = np.minimum(k, np.maximum(n - 1, 0))
    keys = rng.random(m.shape)
    keys[~m] = np.inf  # padding ranks last
    rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")  # (B, L)
    chosen = torch.from_numpy(rank < k[:, None]) & mask
    targets = torch.where(chosen, values, torch.full_like(values, -100))
    return values.masked_fill(chosen, mask_id), targets


class MultimodalBatcher:
    """Micro-batches for :class:`~atacformer.models.MultimodalForMaskedValues` (see the
    module docstring for the input contract).

    Parameters
    ----------
    config
        The model's :class:`~atacformer.models.MultimodalConfig` with fitted value bins for
        the modalities the corpus has.
    kinds
        Batch kinds to draw from (a subset of :data:`KINDS`).
    mask_ratio
        Overrides ``config.mask_ratio``; 0 gives unmasked batches without targets (weight =
        cells), e.g. for :class:`~atacformer.models.MultimodalForCellClassification`.
    label_key
        A ``labels`` entry of integer class codes (-100 = unknown) passed on as ``labels``
        (classification).

    Examples
    --------
    >>> batch, weight = MultimodalBatcher(config)(None, np.random.default_rng(0),
    ...     {"rna": rna_csr, "gene_activity": ga_csr})  # doctest: +SKIP
    >>> model(**batch).loss  # doctest: +SKIP
    """

    def __init__(self, config: MultimodalConfig, kinds=KINDS, mask_ratio: float | None = None,
                 label_key: str | None = None):
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {kinds!r}")
        self.config, self.kinds, self.label_key = config, tuple(kinds), label_key
        self.mask_ratio = config.mask_ratio if mask_ratio is None else float(mask_ratio)

    def effective_lengths(self, n_tokens: np.ndarray) -> np.ndarray:
        """For the trainer's length bucketing: the corpus's region-token counts capped at
        ``max_genes`` (a proxy; gene counts are not known before the gene matrices are read)."""
        return np.minimum(n_tokens, self.config.max_genes)

    def kind(self, labels: dict, rng: np.random.Generator) -> str:
        """The micro-batch's kind, drawn uniformly from the kinds the given matrices allow."""
        possible = [k for k in self.kinds if all(labels.get(n) is not None for n in _NEEDS[k])]
        if not possible:
            raise ValueError(f"labels holds {sorted(k for k, v in labels.items() if v is not None)}; "
                             f"batch kinds {self.kinds} need 'rna' and/or 'gene_activity' (cells x "
                             f"{self.config.n_genes} genes CSR)")
        return possible[int(rng.integers(len(possible)))]

    def __call__(self, X, rng: np.random.Generator, labels: dict | None = None
                 ) -> tuple[dict[str, torch.Tensor], int]:
        """``(batch, weight)``; ``weight`` = masked positions (cells when ``mask_ratio`` is 0)."""
        c, labels = self.config, labels or {}
        kind = self.kind(labels, rng)
        batch: dict[str, torch.Tensor] = {}
        weight, n_cells = 0, 0
        for m, key in (("rna", "rna"), ("atac", "gene_activity")):
            if key not in _NEEDS[kind]:
                continue
            counts = labels[key]
            if counts.shape[1] != c.n_genes:
                raise ValueError(f"labels[{key!r}] has {counts.shape[1]} genes, the model {c.n_genes}")
            want_profile = c.profile_weight > 0 or (m == "rna" and kind == "paired" and c.imputation_weight > 0)
            t = gene_tokens(counts, c.value_bins(m), c.max_genes, c.pad_token_id, rng, c.target_sum,
                            profile=want_profile)
            n_cells = counts.shape[0]
            batch[f"{m}_ids"], batch[f"{m}_mask"] = t.ids, t.mask
            if self.mask_ratio > 0:
                values, targets = mask_values(t.values, t.mask, self.mask_ratio, c.mask_value_id, rng)
                batch[f"{m}_values"], batch[f"{m}_targets"] = values, targets
                weight += int((targets != -100).sum())
            else:
                batch[f"{m}_values"] = t.values
            if t.profile is not None:
                batch[f"{m}_profile"] = t.profile
        if self.label_key is not None:
            batch["labels"] = torch.as_tensor(np.asarray(labels[self.label_key], dtype=np.int64))
        return batch, (weight if self.mask_ratio > 0 else n_cells)


__all__ = ["KINDS", "MultimodalBatcher", "mask_values"]
