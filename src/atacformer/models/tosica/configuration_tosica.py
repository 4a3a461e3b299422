"""Configuration of TOSICA, interpretable cell-type annotation over gene-set tokens (Chen 2023)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from atacformer.models._pretrained import ModelConfig

#: Name of the token made of the genes that are in no kept gene set.
UNANNOTATED = "<unannotated>"


@dataclass
class TosicaConfig(ModelConfig):
    """TOSICA: a gene-set-masked linear embedding (one token per gene set), a ``<cls>`` token,
    self-attention and a classifier on the ``<cls>`` output.

    Everything prediction needs travels in the config: the genes in the order the model reads
    them, the gene sets (names and member positions, from which the mask is rebuilt) and the
    label names.

    Parameters
    ----------
    gene_names
        The genes the model reads, in order (the columns of its input).
    pathway_names
        One name per token (gene set); the last is :data:`UNANNOTATED` when ``unannotated``.
    gene_sets
        Per token, the positions (in ``gene_names``) of its genes: the mask ``M``.
    label_names
        The cell types, in the order of the classifier's outputs.
    embed_dim
        ``m``, the number of parallel masked copies = the width of each token (48 in the paper).
    num_layers, num_heads
        Self-attention blocks and heads (the paper: 1-2 layers, few heads).
    mlp_ratio
        Hidden width of each block's feed-forward part, as a multiple of ``embed_dim``.
    dropout
        Dropout on attention weights and block outputs.
    threshold
        Default confidence threshold: cells whose highest class probability is below it are
        called ``"Unknown"``.

    Examples
    --------
    >>> c = TosicaConfig(gene_names=["A", "B", "C"], pathway_names=["P1", "P2"],
    ...                  gene_sets=[[0, 1], [2]], label_names=["T", "B"])
    >>> c.mask().astype(int).tolist()
    [[1, 0], [1, 0], [0, 1]]
    >>> TosicaConfig.from_dict(c.to_dict()) == c
    True
    """

    model_type: ClassVar[str] = "tosica"
    gene_names: list = field(default_factory=list)
    pathway_names: list = field(default_factory=list)
    gene_sets: list = field(default_factory=list)
    label_names: list = field(default_factory=list)
    embed_dim: int = 48
    num_layers: int = 2
    num_heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.1
    threshold: float = 0.5

    def __post_init__(self):
        self.gene_sets = [[int(i) for i in s] for s in self.gene_sets]
        if len(self.pathway_names) != len(self.gene_sets):
            raise ValueError(f"{len(self.pathway_names)} pathway names for {len(self.gene_sets)} gene sets")
        n = len(self.gene_names)
        for name, s in zip(self.pathway_names, self.gene_sets):
            if not s:
                raise ValueError(f"gene set {name!r} has no gene")
            if min(s) < 0 or max(s) >= n:
                raise ValueError(f"gene set {name!r} has a gene position outside 0..{n - 1}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")

    @property
    def n_genes(self) -> int:
        return len(self.gene_names)

    @property
    def n_pathways(self) -> int:
        return len(self.pathway_names)

    def mask(self) -> np.ndarray:
        """The genes x pathways membership matrix ``M`` (bool)."""
        m = np.zeros((self.n_genes, self.n_pathways), dtype=bool)
        for j, s in enumerate(self.gene_sets):
            m[s, j] = True
        return m
