"""Configuration of The masked-bin model (Ge 2025)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from atacformer.models._pretrained import ModelConfig

_CHOICES = {
    "group_by": ("chromosome", "class"),
    "embedding": ("factorized", "full"),
    "position_encoding": ("none", "genomic"),
    "decoder": ("mlp", "cross_attention"),
    "decoder_input": ("small", "full"),
}


@dataclass
class MaskedBinConfig(ModelConfig):
    """The masked-bin model: a cell sentence of open bins, one ``<eos>`` per chromosome (or region
    class), and a decoder that predicts every bin's state (0 = not in the cell, 1 = in the
    sentence, 2 = in the cell but removed).

    The vocabulary-dependent fields (``vocab_size`` .. ``eos_token_ids``,
    ``n_position_buckets``, ``dna_embedding_dim``) are filled in by
    :meth:`MaskedBinForPretraining.from_vocab`; the others are the model's switches.

    Parameters
    ----------
    vocab_size, n_bins
        Tokens in the vocabulary (bins + special tokens) and bins (ids ``0 .. n_bins - 1``).
    cls_token_id, pad_token_id
        Ids of ``<cls>`` and ``<pad>``.
    group_by
        ``"chromosome"`` (one ``<eos>`` per chromosome, Ge 2025's design) or ``"class"``
        (one per genomic-region class; the bin -> class array is given to ``from_vocab``).
    group_names, eos_token_ids
        The groups (chromosomes or classes) and the id of each group's ``<eos_g>`` token.
    hidden_size, num_layers, num_heads, intermediate_size, activation, norm_first, dropout,
    layer_norm_eps
        The encoder (Ge 2025: d = 512, 12 layers, pre-LayerNorm).
    embedding
        ``"factorized"``: E1 (V x k) then E2 (k x d); ``"full"``: one V x d table.
    embedding_dim
        k, the factorised embedding width (64).
    class_embedding
        Add a learned embedding of each bin's group (chromosome or region class) to the bin
        tokens (Ge 2025's "class embedding vs no class embedding").
    position_encoding
        ``"none"`` (a cell is a set in genomic order) or ``"genomic"``: a learned embedding of
        the bin's genome-wide position, in buckets of ``position_resolution`` bp.
    position_resolution, n_position_buckets
        Bucket size (bp) and number of buckets.
    dna_embedding_dim
        Width of the per-bin DNA embedding table (0 = no DNA embedding); the table is
        projected to d and added to the bin tokens.
    decoder
        ``"mlp"``: the ``<eos_g>`` outputs of the sentence feed the bin-wise MLP;
        ``"cross_attention"``: independent ``<eos_g>`` queries (not in the sentence) attend to
        the encoder output (Ge 2025 fig. 2).
    cross_attention_layers
        Cross-attention blocks of the ``"cross_attention"`` decoder.
    decoder_input
        ``"small"``: ``<eos_g>`` output compressed to ``decoder_dim`` + the bin's E1 row (64 +
        64); ``"full"``: the d-wide ``<eos_g>`` output + the d-wide bin embedding (512 + 512).
    decoder_dim
        Width of the compressed ``<eos_g>`` output (64).
    decoder_hidden_size
        Hidden width of the bin-wise MLP.
    decoder_chunk_size
        Bins per chunk when the loss runs over all bins (bounds memory; each chunk is
        recomputed in the backward pass).
    closed_bin_sampling
        False: cross-entropy over every bin of every group; True: over the cell's open bins
        plus ``closed_bins_per_open`` x as many closed bins drawn at random.
    mask_ratio
        Fraction of a cell's open bins removed from the sentence during pretraining (0 or 0.15).
    max_length
        Longest sentence (``<cls>`` + bins + ``<eos>`` tokens); longer cells are subsampled.
    num_organs, num_cell_types
        Classes of the optional supervised heads on the ``<cls>`` output (0 = no head).
    supervised_loss_weight
        Weight of the supervised losses added to the decoder loss.
    initializer_range
        Std of the normal initialisation.
    pooling
        Cell embedding: the ``<cls>`` output (``"cls"``) or the mean over the sentence's bins.
    remove_depth, l2_normalize
        Post-processing of a set of cell embeddings (see :func:`atacformer.tools.embed`).
    """

    model_type: ClassVar[str] = "atacformer_masked_bin"

    vocab_size: int = 0
    n_bins: int = 0
    cls_token_id: int = 0
    pad_token_id: int = 0
    group_by: str = "chromosome"
    group_names: list[str] = field(default_factory=list)
    eos_token_ids: list[int] = field(default_factory=list)
    hidden_size: int = 512
    num_layers: int = 12
    num_heads: int = 8
    intermediate_size: int = 2048
    activation: str = "gelu"
    norm_first: bool = True
    dropout: float = 0.1
    layer_norm_eps: float = 1e-5
    embedding: str = "factorized"
    embedding_dim: int = 64
    class_embedding: bool = False
    position_encoding: str = "none"
    position_resolution: int = 1_000_000
    n_position_buckets: int = 0
    dna_embedding_dim: int = 0
    decoder: str = "mlp"
    cross_attention_layers: int = 1
    decoder_input: str = "small"
    decoder_dim: int = 64
    decoder_hidden_size: int = 128
    decoder_chunk_size: int = 16384
    closed_bin_sampling: bool = False
    closed_bins_per_open: float = 1.0
    mask_ratio: float = 0.15
    max_length: int = 6800
    num_organs: int = 0
    num_cell_types: int = 0
    supervised_loss_weight: float = 1.0
    initializer_range: float = 0.02
    pooling: str = "cls"
    remove_depth: bool = False
    l2_normalize: bool = False

    def __post_init__(self):
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if len(self.group_names) != len(self.eos_token_ids):
            raise ValueError(f"{len(self.group_names)} group names but {len(self.eos_token_ids)} "
                             "eos token ids")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.decoder_chunk_size < 1:
            raise ValueError(f"decoder_chunk_size must be positive, got {self.decoder_chunk_size}")

    @property
    def n_groups(self) -> int:
        """Number of ``<eos>`` groups (chromosomes or region classes)."""
        return len(self.group_names)

    @property
    def eos_in_sentence(self) -> bool:
        """The MLP decoder reads ``<eos_g>`` tokens from the sentence; the cross-attention
        decoder has its own queries and the sentence carries none."""
        return self.decoder == "mlp"
