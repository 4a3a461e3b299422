"""Configuration of the gene-level multimodal RNA + ATAC model (thesis ch. 4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from atacformer.models._pretrained import ModelConfig
from atacformer.models.multimodal.values import ValueBins, fit_value_bins

#: The two modalities, in modality-embedding order. ``"atac"`` is ATAC as gene activity
#: (a cells x genes matrix over the same genes as the RNA).
MODALITIES = ("rna", "atac")


@dataclass
class MultimodalConfig(ModelConfig):
    """The multimodal model: each cell is gene tokens with binned values, per modality.

    A token's input is the sum of its gene's embedding, its value bin's embedding (one table
    per modality) and its modality's embedding; one encoder (SDPA) reads each modality's
    tokens; a modality's cell embedding is the mean of its final hidden states over real
    tokens (or a ``<cls>`` output) and the joint embedding is the mean of the modalities
    present.

    Value ids: 0 = zero, 1 .. ``n_bins`` = percentile bins of non-zero values, ``n_bins + 1`` =
    ``<mask>``. Gene ids: 0 .. ``n_genes - 1``, then ``<pad>`` (``n_genes``) and ``<cls>``
    (``n_genes + 1``).

    Parameters
    ----------
    n_genes
        Genes (the token vocabulary; the same genes, in the same order, for both modalities).
    gene_names
        The genes' names in token-id order (saved with the model; empty = unnamed).
    n_bins
        Percentile bins of non-zero values (the thesis: 5).
    hidden_size, num_layers, num_heads, intermediate_size, activation, norm_first, dropout,
    layer_norm_eps
        The encoder (the thesis: d = 128, 6 layers).
    max_genes
        Most tokens per cell and modality: a cell with more non-zero genes keeps those of
        highest value.
    mask_ratio
        Fraction of a cell's tokens whose value is masked for reconstruction.
    pooling
        A modality's cell embedding: ``"mean"`` over real tokens or the ``<cls>`` output.
    imputation_weight
        Weight of the cross-modal loss (every gene's RNA bin predicted from the ATAC cell
        embedding, on paired batches) added to the masked-value loss.
    profile_weight
        Weight of the profile reconstruction (every gene's bin of each modality present,
        zeros included, predicted from the joint embedding) added to the loss. The imputation
        and this share one profile decoder (none when both weights are 0).
    value_decoder
        What the masked-value decoder reads besides the joint cell embedding: the masked
        token's final hidden state (``"token"``, BERT-style) or only its gene's embedding
        (``"cell"``), so that the cell embedding has to carry the cell's values.
    target_sum
        Counts per cell after depth normalisation (binning step 1).
    rna_idf, rna_bin_edges, atac_idf, atac_bin_edges
        Each modality's fitted binning (:func:`~atacformer.models.multimodal.fit_value_bins`
        on its training matrix), so that inference bins cells as training did; empty until
        fitted (:meth:`with_value_bins`).
    label_names
        Classes of :class:`MultimodalForCellClassification` (empty for the other classes).
    initializer_range
        Std of the normal initialisation.

    Examples
    --------
    >>> cfg = MultimodalConfig(n_genes=100, hidden_size=32, num_layers=2, num_heads=4,
    ...                        intermediate_size=64)
    >>> cfg.pad_token_id, cfg.mask_value_id, cfg.n_value_classes
    (100, 6, 6)
    """

    model_type: ClassVar[str] = "atacformer_multimodal"

    n_genes: int = 0
    gene_names: list[str] = field(default_factory=list)
    n_bins: int = 5
    hidden_size: int = 128
    num_layers: int = 6
    num_heads: int = 8
    intermediate_size: int = 512
    activation: str = "gelu"
    norm_first: bool = True
    dropout: float = 0.1
    layer_norm_eps: float = 1e-5
    max_genes: int = 2048
    mask_ratio: float = 0.15
    pooling: str = "mean"
    imputation_weight: float = 1.0
    profile_weight: float = 0.0
    value_decoder: str = "token"
    target_sum: float = 1e4
    rna_idf: list[float] = field(default_factory=list)
    rna_bin_edges: list[float] = field(default_factory=list)
    atac_idf: list[float] = field(default_factory=list)
    atac_bin_edges: list[float] = field(default_factory=list)
    label_names: list[str] = field(default_factory=list)
    initializer_range: float = 0.02

    def __post_init__(self):
        if self.gene_names and len(self.gene_names) != self.n_genes:
            raise ValueError(f"{len(self.gene_names)} gene names but n_genes = {self.n_genes}")
        if self.n_genes < 1:
            raise ValueError(f"n_genes must be positive, got {self.n_genes}")
        if self.n_bins < 1:
            raise ValueError(f"n_bins must be at least 1, got {self.n_bins}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.value_decoder not in ("token", "cell"):
            raise ValueError(f"value_decoder must be 'token' or 'cell', got {self.value_decoder!r}")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {self.pooling!r}")
        if self.max_genes < 1:
            raise ValueError(f"max_genes must be positive, got {self.max_genes}")
        for m in MODALITIES:
            idf, edges = getattr(self, f"{m}_idf"), getattr(self, f"{m}_bin_edges")
            if idf and len(idf) != self.n_genes:
                raise ValueError(f"{m}_idf has {len(idf)} values, expected n_genes = {self.n_genes}")
            if edges and len(edges) != self.n_bins - 1:
                raise ValueError(f"{m}_bin_edges has {len(edges)} values, expected n_bins - 1 = "
                                 f"{self.n_bins - 1}")

    # -- token and value ids ------------------------------------------------------------
    @property
    def pad_token_id(self) -> int:
        return self.n_genes

    @property
    def cls_token_id(self) -> int:
        return self.n_genes + 1

    @property
    def n_tokens(self) -> int:
        """Rows of the gene-token table: genes, ``<pad>``, ``<cls>``."""
        return self.n_genes + 2

    @property
    def mask_value_id(self) -> int:
        return self.n_bins + 1

    @property
    def n_value_ids(self) -> int:
        """Value ids of the input: zero, the bins, ``<mask>``."""
        return self.n_bins + 2

    @property
    def n_value_classes(self) -> int:
        """Classes of the reconstruction: zero and the bins."""
        return self.n_bins + 1

    # -- value binning ------------------------------------------------------------------
    def value_bins(self, modality: str) -> ValueBins:
        """The fitted :class:`ValueBins` of ``modality`` (``"rna"`` or ``"atac"``)."""
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        idf, edges = getattr(self, f"{modality}_idf"), getattr(self, f"{modality}_bin_edges")
        if not idf:
            raise ValueError(f"the config has no fitted {modality} value bins; fit them on the "
                             f"training matrix with config.with_value_bins({modality}=...)")
        return ValueBins(np.asarray(idf, dtype=np.float64), np.asarray(edges, dtype=np.float64))

    def with_value_bins(self, rna=None, atac=None) -> "MultimodalConfig":
        """A copy whose binning is fitted on training matrices (cells x ``n_genes`` counts;
        ``atac`` = gene activity) or taken from :class:`ValueBins`; a modality left ``None``
        keeps its current binning.

        Examples
        --------
        >>> cfg = MultimodalConfig(n_genes=3).with_value_bins(rna=np.array([[1, 0, 2], [0, 3, 1]]))
        >>> len(cfg.rna_idf), len(cfg.rna_bin_edges)
        (3, 4)
        """
        changes = {}
        for m, x in (("rna", rna), ("atac", atac)):
            if x is None:
                continue
            fit = x if isinstance(x, ValueBins) else fit_value_bins(x, self.n_bins, self.target_sum)
            if len(fit.idf) != self.n_genes:
                raise ValueError(f"{m}: {len(fit.idf)} genes, but the config has n_genes = {self.n_genes}")
            changes[f"{m}_idf"] = [float(v) for v in fit.idf]
            changes[f"{m}_bin_edges"] = [float(v) for v in fit.edges]
        return self.replace(**changes)


__all__ = ["MODALITIES", "MultimodalConfig"]
