"""Configuration of Atacformer, the replaced-token-detection model (LeRoy 2025, ch. 5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from atacformer.models._pretrained import ModelConfig

# the released atacformer-base-hg38: 890,704 regions + gtars' 7 special tokens
_BASE_HG38_REGIONS = 890_704
_N_DEFAULT_SPECIALS = 7

#: Fine-tuning objectives of :class:`AtacformerForFinetuning`.
FINETUNE_OBJECTIVES = ("triplet", "classify", "batch-adversarial")
TRIPLET_MINING = ("batch-hard", "semi-hard", "random")


@dataclass
class AtacformerConfig(ModelConfig):
    """Atacformer: token embedding (V x d), no positions, an encoder, a replaced-token head.

    Parameters
    ----------
    vocab_size
        Regions + special tokens (``len(vocabulary)``).
    n_regions
        Region tokens (ids ``0 .. n_regions - 1``); replacements are drawn among these.
    pad_token_id, cls_token_id
        Special token ids (gtars layout: ``<pad>`` = n_regions + 1, ``<cls>`` = n_regions + 3).
    hidden_size, num_layers, num_heads, intermediate_size
        Encoder width, depth, heads and feed-forward width.
    activation
        ``"gelu"`` or ``"relu"`` in the feed-forward network.
    norm_first
        Pre-LayerNorm (True, with a final LayerNorm) or post-LayerNorm (False).
    dropout
        Dropout on attention weights, residual branches and feed-forward.
    layer_norm_eps
        Epsilon of the encoder LayerNorms.
    max_length
        Context size; longer cells are randomly subsampled.
    use_position_embeddings
        Add learned sequence-position embeddings (off in every published Atacformer).
    replace_prob
        Probability that a token is replaced during pretraining (0.45: the dissertation;
        0.15: the public code).
    head
        Replaced-token head: ``"mlp"`` (dense, GELU, LayerNorm, linear: geniml's
        ELECTRA-small head) or ``"linear"`` (the dissertation's eq. 18).
    head_hidden_size
        Width of the MLP head (default ``hidden_size``).
    head_norm_eps
        Epsilon of the head's LayerNorm.
    initializer_range
        Std of the normal initialisation.
    contrastive_weight, temperature
        Replaced-token detection: weight of a cell-level InfoNCE term between two disjoint
        token subsets of each cell (0 = off) and its softmax temperature.
    hide_prob
        Profile reconstruction: fraction of a cell's tokens hidden from the encoder (the
        decoder must still score every open region of the cell).
    decoder_bias_init
        Profile reconstruction: start the per-region decoder bias at the log-odds of each
        region's training frequency (set when the model is built from data).
    depth_offset
        Profile reconstruction: add each cell's centred log number of open regions to all
        its region scores (PeakVI's library-size factor), so that the cell vector need not
        encode depth.
    tie_decoder
        Profile reconstruction: score regions with the token table itself (tied) instead of
        a separate decoder table.
    cell_norm
        A LayerNorm on the pooled cell vector (part of the cell embedding).
    pooling
        How a cell embedding is pooled from the final hidden states: ``"mean"`` (geniml's) or
        ``"idf"`` (weighted by each token's inverse document frequency in the training cells,
        stored with the model).
    remove_depth, l2_normalize
        Post-processing of a set of cell embeddings: replace them by their principal
        components minus the one that follows sequencing depth; scale each cell to unit
        length. Saved with the model so that every entry point embeds alike.
    finetune_objective
        Fine-tuning (:class:`AtacformerForFinetuning`): ``"triplet"`` (metric learning on
        pooled cells), ``"classify"`` (a label head on the pooled cell) or
        ``"batch-adversarial"`` (profile reconstruction plus a batch classifier behind
        gradient reversal); None for the pretraining models.
    label_names, batch_names
        Class names of the fine-tuning labels (the head's outputs, in order) and of the
        batches of ``"batch-adversarial"``.
    balanced
        ``"classify"``: weight each label's cross-entropy by the inverse of its frequency in the
        training cells (every label counts alike, as macro-F1 does); the weights are saved
        with the model.
    triplet_margin, triplet_mining
        ``TripletMarginLoss(margin, p=2)`` and how each anchor's positive and negative are
        picked in a batch: ``"batch-hard"`` (farthest positive, nearest negative),
        ``"semi-hard"`` (a random positive; the nearest negative farther than it, else the
        nearest) or ``"random"``.
    adversarial_weight, reversal_strength
        Weight of the batch classifier's loss, and the factor by which gradient reversal
        multiplies (and negates) its gradient into the encoder.
    lora
        LoRA adapters on the backbone (``{"rank", "alpha", "dropout", "targets"}``, through
        ``peft``) or None; the saved folder holds the unmerged adapters.

    Examples
    --------
    >>> cfg = AtacformerConfig(vocab_size=107, n_regions=100, pad_token_id=101, hidden_size=32,
    ...                        num_layers=2, num_heads=4, intermediate_size=64)
    >>> AtacformerConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    model_type: ClassVar[str] = "atacformer_rtd"

    vocab_size: int = _BASE_HG38_REGIONS + _N_DEFAULT_SPECIALS
    n_regions: int = _BASE_HG38_REGIONS
    pad_token_id: int = _BASE_HG38_REGIONS + 1
    cls_token_id: int = _BASE_HG38_REGIONS + 3
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 8
    intermediate_size: int = 1536
    activation: str = "gelu"
    norm_first: bool = True
    dropout: float = 0.1
    layer_norm_eps: float = 1e-5
    max_length: int = 8192
    use_position_embeddings: bool = False
    replace_prob: float = 0.45
    head: str = "mlp"
    head_hidden_size: int | None = None
    head_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    contrastive_weight: float = 0.0
    temperature: float = 0.1
    hide_prob: float = 0.5
    decoder_bias_init: bool = True
    depth_offset: bool = True
    tie_decoder: bool = False
    cell_norm: bool = False
    pooling: str = "mean"
    remove_depth: bool = False
    l2_normalize: bool = False
    finetune_objective: str | None = None
    label_names: list | None = None
    balanced: bool = True
    batch_names: list | None = None
    triplet_margin: float = 1.0
    triplet_mining: str = "semi-hard"
    adversarial_weight: float = 1.0
    reversal_strength: float = 1.0
    lora: dict | None = None

    def __post_init__(self):
        if self.finetune_objective not in (None,) + FINETUNE_OBJECTIVES:
            raise ValueError(f"finetune_objective must be one of {FINETUNE_OBJECTIVES}, got "
                             f"{self.finetune_objective!r}")
        if self.triplet_mining not in TRIPLET_MINING:
            raise ValueError(f"triplet_mining must be one of {TRIPLET_MINING}, got {self.triplet_mining!r}")
        if self.pooling not in ("mean", "idf"):
            raise ValueError(f"pooling must be 'mean' or 'idf', got {self.pooling!r}")
        if not 0.0 <= self.hide_prob < 1.0:
            raise ValueError(f"hide_prob must be in [0, 1), got {self.hide_prob}")
        if self.head not in ("mlp", "linear"):
            raise ValueError(f"head must be 'mlp' or 'linear', got {self.head!r}")
        if not 0.0 <= self.replace_prob < 1.0:
            raise ValueError(f"replace_prob must be in [0, 1), got {self.replace_prob}")
        if not 0 < self.n_regions <= self.vocab_size:
            raise ValueError(f"n_regions {self.n_regions} must be in (0, vocab_size={self.vocab_size}]")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id {self.pad_token_id} outside the vocabulary")

    @classmethod
    def base_hg38(cls) -> "AtacformerConfig":
        """The architecture of the released ``databio/atacformer-base-hg38``: hidden 192,
        6 post-LN layers, 8 heads, feed-forward 768, ReLU, dropout 0.1, no positions,
        890,704 regions + 7 special tokens."""
        return cls(hidden_size=192, num_layers=6, num_heads=8, intermediate_size=768,
                   activation="relu", norm_first=False, dropout=0.1, layer_norm_eps=1e-5,
                   use_position_embeddings=False, max_length=8192, head="mlp")

    @classmethod
    def for_vocab(cls, vocab, **kwargs) -> "AtacformerConfig":
        """A config sized for ``vocab`` (a :class:`~atacformer.vocab.Vocabulary` with
        ``<pad>`` and ``<cls>`` special tokens); other fields from ``kwargs``."""
        return cls(vocab_size=len(vocab), n_regions=vocab.n_regions,
                   pad_token_id=vocab.token_id("<pad>"), cls_token_id=vocab.token_id("<cls>"),
                   **kwargs)

    # -- geniml ------------------------------------------------------------------------
    GENIML_KEYS: ClassVar[frozenset] = frozenset({"use_pos_embeddings", "max_position_embeddings",
                                                  "num_hidden_layers", "num_attention_heads"})

    @classmethod
    def from_geniml(cls, d: dict[str, Any], n_regions: int | None = None) -> "AtacformerConfig":
        """Translate a geniml ``AtacformerConfig`` (``config.json`` of ``model_type``
        "atacformer"). geniml's encoder is ``nn.TransformerEncoder`` with default layers:
        post-LN, ReLU, dropout 0.1, LayerNorm eps 1e-5, no final norm."""
        vocab_size = int(d["vocab_size"])
        return cls(
            vocab_size=vocab_size,
            n_regions=int(n_regions if n_regions is not None else vocab_size - _N_DEFAULT_SPECIALS),
            pad_token_id=int(d.get("pad_token_id", vocab_size - 6)),
            cls_token_id=int(d.get("cls_token_id", vocab_size - 4)),
            hidden_size=int(d["hidden_size"]),
            num_layers=int(d["num_hidden_layers"]),
            num_heads=int(d["num_attention_heads"]),
            intermediate_size=int(d["intermediate_size"]),
            activation="relu", norm_first=False, dropout=0.1, layer_norm_eps=1e-5,
            max_length=int(d.get("max_position_embeddings", 8192)),
            use_position_embeddings=bool(d.get("use_pos_embeddings", True)),
            head="mlp",
            head_hidden_size=d.get("discriminator_hidden_size"),
            head_norm_eps=float(d.get("norm_eps", 1e-5)),
            initializer_range=float(d.get("initializer_range", 0.02)),
        )
