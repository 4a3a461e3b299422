"""Configuration of CRAFT, the contrastive RNA-ATAC dual encoder (LeRoy 2025, ch. 5)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from atacformer.models._pretrained import ModelConfig


@dataclass
class CraftConfig(ModelConfig):
    """CRAFT: an Atacformer encoder for ATAC, a rank encoder for RNA, both projected into one
    space where a cell's two modalities meet (CLIP, Radford 2021).

    Parameters
    ----------
    atac
        The ATAC encoder's :class:`~atacformer.models.AtacformerConfig` fields.
    rna
        The RNA encoder's :class:`~atacformer.models.craft.RankEncoder` arguments.
    gene_names
        The genes the model reads and imputes, in order.
    gene_token_ids
        Token id of each gene in the RNA encoder's vocabulary.
    max_genes
        Ranked gene tokens per cell (Geneformer: 2,048).
    projection_dim
        Width of the shared space (the cell embedding of both modalities).
    logit_scale_init
        Initial log inverse temperature, log(1/0.07) as CLIP; learned, capped at log(100).
    impute_hidden_size, impute_weight
        The RNA decoder (one hidden layer, from the ATAC embedding to log-normalised
        expression) and the weight of its mean squared error in the loss.
    atac_hide_prob, rna_thinning
        Training augmentations: the fraction of a cell's ATAC tokens hidden, and the fraction
        of its RNA counts removed (binomial thinning) before ranking.

    Examples
    --------
    >>> c = CraftConfig(gene_names=["A", "B"], gene_token_ids=[3, 4])
    >>> CraftConfig.from_dict(c.to_dict()) == c
    True
    """

    model_type: ClassVar[str] = "craft"
    atac: dict = field(default_factory=dict)
    rna: dict = field(default_factory=dict)
    gene_names: list = field(default_factory=list)
    gene_token_ids: list = field(default_factory=list)
    max_genes: int = 2048
    projection_dim: int = 128
    logit_scale_init: float = math.log(1 / 0.07)
    impute_hidden_size: int = 256
    impute_weight: float = 1.0
    atac_hide_prob: float = 0.5
    rna_thinning: float = 0.5

    def __post_init__(self):
        if len(self.gene_token_ids) != len(self.gene_names):
            raise ValueError(f"{len(self.gene_names)} genes but {len(self.gene_token_ids)} gene token ids")

    # what the embedding path and the vocabulary checks read off a config
    @property
    def hidden_size(self) -> int:
        return self.projection_dim

    @property
    def vocab_size(self) -> int:
        return int(self.atac["vocab_size"])

    @property
    def n_regions(self) -> int:
        return int(self.atac["n_regions"])

    @property
    def pad_token_id(self) -> int:
        return int(self.atac["pad_token_id"])

    @property
    def max_length(self) -> int:
        return int(self.atac.get("max_length", 8192))
