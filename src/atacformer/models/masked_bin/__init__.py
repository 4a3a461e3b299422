"""The masked-bin model with per-chromosome (or per-class) ``<eos>`` decoding
(Ge 2025)."""

from atacformer.models.masked_bin.collate_masked_bin import (
    MaskedBinCollator,
    Sentence,
    build_sentence,
    collate_sentences,
)
from atacformer.models.masked_bin.configuration_masked_bin import MaskedBinConfig
from atacformer.models.masked_bin.modeling_masked_bin import (
    BinStateDecoder,
    MaskedBinEmbeddings,
    MaskedBinForPretraining,
    MaskedBinModel,
    MaskedBinOutput,
    masked_bin_vocabulary,
)

__all__ = [
    "BinStateDecoder",
    "MaskedBinCollator",
    "MaskedBinConfig",
    "MaskedBinEmbeddings",
    "MaskedBinForPretraining",
    "MaskedBinModel",
    "MaskedBinOutput",
    "Sentence",
    "build_sentence",
    "collate_sentences",
    "masked_bin_vocabulary",
]
