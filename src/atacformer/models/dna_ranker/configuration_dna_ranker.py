"""Configuration of the ATAC-aware DNA ranking model (LeRoy 2025, ch. 3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from atacformer.models._pretrained import ModelConfig

TARGETS = ("rank", "softmax")


@dataclass
class DnaRankerConfig(ModelConfig):
    """A convolutional DNA encoder with a chromatin accessibility scorer (CAS) head that
    scores each region of a span; the regions are ranked by their scores.

    Parameters
    ----------
    n_regions
        Regions per span (3 in LeRoy 2025).
    region_length
        Bases per region (every region of a span is this long).
    channels, kernel_sizes, pool_sizes
        One convolution (ReLU, then max pooling of that size; 1 = none) per entry, on the
        one-hot sequence (``N`` = all zeros).
    head_hidden
        Width of the CAS head's hidden layer (max and mean pooled encoder output -> hidden ->
        one score).
    dropout
        Dropout before the CAS head.
    reverse_complement
        Score a region as the mean of its forward and reverse-complement scores (a region's
        score does not depend on the strand it is read from).
    target
        Target distribution of the list-wise loss: ``"rank"`` (the regions' ranks 0, 1, 2
        by accessibility, normalised to sum 1, as the softmax loss of Rax on rank labels in
        LeRoy 2025) or ``"softmax"`` (the softmax of the accessibility values, ListNet's
        top-one probability, Cao 2007).
    target_temperature
        Temperature of the ``"softmax"`` target.

    Examples
    --------
    >>> c = DnaRankerConfig(region_length=200)
    >>> DnaRankerConfig.from_dict(c.to_dict()) == c
    True
    """

    model_type: ClassVar[str] = "dna-ranker"
    n_regions: int = 3
    region_length: int = 500
    channels: list = field(default_factory=lambda: [32, 32, 32])
    kernel_sizes: list = field(default_factory=lambda: [15, 7, 5])
    pool_sizes: list = field(default_factory=lambda: [4, 4, 1])
    head_hidden: int = 32
    dropout: float = 0.1
    reverse_complement: bool = True
    target: str = "rank"
    target_temperature: float = 0.1

    def __post_init__(self):
        if not (len(self.channels) == len(self.kernel_sizes) == len(self.pool_sizes)) or not self.channels:
            raise ValueError(f"channels, kernel_sizes and pool_sizes must be equally long lists, got "
                             f"{self.channels}, {self.kernel_sizes}, {self.pool_sizes}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.n_regions < 2 or self.region_length < 1:
            raise ValueError(f"need n_regions >= 2 and region_length >= 1, got {self.n_regions}, "
                             f"{self.region_length}")
        if self.target_temperature <= 0:
            raise ValueError(f"target_temperature must be > 0, got {self.target_temperature}")
