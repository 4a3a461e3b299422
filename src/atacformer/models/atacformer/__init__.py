"""Atacformer: replaced-token detection over region tokens (LeRoy 2025, ch. 5)."""

from atacformer.models.atacformer.configuration_atacformer import AtacformerConfig
from atacformer.models.atacformer.finetuning import (
    AtacformerForFinetuning,
    GradientReversal,
    mine_triplets,
    reverse_gradient,
)
from atacformer.models.atacformer.modeling_atacformer import (
    AtacformerForProfileReconstruction,
    AtacformerForReplacedTokenDetection,
    AtacformerModel,
    ReplacedTokenCollator,
    ReplacedTokenDetectionOutput,
    convert_geniml_state_dict,
    is_geniml_config,
    replace_tokens,
)

__all__ = [
    "AtacformerConfig",
    "AtacformerForFinetuning",
    "GradientReversal",
    "mine_triplets",
    "reverse_gradient",
    "AtacformerForProfileReconstruction",
    "AtacformerForReplacedTokenDetection",
    "AtacformerModel",
    "ReplacedTokenCollator",
    "ReplacedTokenDetectionOutput",
    "convert_geniml_state_dict",
    "is_geniml_config",
    "replace_tokens",
]
