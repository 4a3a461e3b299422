"""Configuration of GET, the region-feature -> expression transformer (Fu 2025)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from atacformer.models._pretrained import ModelConfig

#: encoder layers LoRA adapts by default (names inside :class:`~atacformer.models._layers.EncoderBlock`)
DEFAULT_LORA_TARGETS = ("qkv", "out_proj", "linear1", "linear2")
#: fine-tuning losses (see :class:`GETConfig`)
OBJECTIVES = ("poisson", "log1p_mse")


@dataclass
class GETConfig(ModelConfig):
    """GET (Fu 2025): the regions around a gene's TSS, each a vector of motif scores and
    accessibility, embedded linearly and read by a transformer encoder.

    Parameters
    ----------
    n_features
        Width of a region's feature vector (motif columns + accessibility).
    feature_names
        Name of each feature column, in order (the last is ``"accessibility"``).
    hidden_size, num_layers, num_heads, intermediate_size, dropout
        The encoder (Fu 2025 uses 12 layers; a few suffice on a CPU).
    max_regions
        Regions per gene window (the ``N`` nearest the TSS; Fu 2025: 200).
    window_bp
        Width of the window around the TSS the regions are taken from (2 Mb).
    distance_buckets
        Learned embeddings of the signed region-TSS distance on a log2 scale (half
        upstream, half downstream): where a region lies relative to the gene it is read for.
    mask_ratio
        Fraction of a window's regions replaced by the mask vector in pretraining (0.5).
    head_hidden_size
        Hidden width of the expression MLP after attention pooling.
    objective
        Fine-tuning loss: ``"poisson"`` (Poisson likelihood of the counts per million, the head
        giving the log rate; Fu 2025) or ``"log1p_mse"`` (squared error of ``log1p`` counts per
        million, the head giving ``log1p`` CPM: every gene weighs the same, as in a log-scale score).
    lora
        ``{"rank", "alpha", "dropout", "targets"}`` of the LoRA adapters of a fine-tuned
        model (``None``: none).
    initializer_range
        Standard deviation of the normal weight initialisation.

    Examples
    --------
    >>> cfg = GETConfig(n_features=5, hidden_size=32, num_layers=1)
    >>> cfg.model_type, cfg.max_regions
    ('get', 200)
    """

    model_type: ClassVar[str] = "get"

    n_features: int = 1
    feature_names: list[str] = field(default_factory=list)
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    dropout: float = 0.1
    max_regions: int = 200
    window_bp: int = 2_000_000
    distance_buckets: int = 40
    mask_ratio: float = 0.5
    head_hidden_size: int = 64
    objective: str = "poisson"
    lora: dict | None = None
    initializer_range: float = 0.02

    def __post_init__(self):
        if self.n_features < 1:
            raise ValueError(f"n_features must be at least 1, got {self.n_features}")
        if self.feature_names and len(self.feature_names) != self.n_features:
            raise ValueError(f"{len(self.feature_names)} feature names for n_features={self.n_features}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {self.mask_ratio}")
        if self.distance_buckets < 2 or self.distance_buckets % 2:
            raise ValueError(f"distance_buckets must be an even number >= 2, got {self.distance_buckets}")
