"""GET: region features (motif scores + accessibility) -> expression (Fu 2025)."""

from atacformer.models.get.configuration_get import DEFAULT_LORA_TARGETS, GETConfig
from atacformer.models.get.modeling_get import (
    GETForExpression, GETForMaskedRegions, GETModel, GETOutput, distance_bucket,
)

__all__ = ["DEFAULT_LORA_TARGETS", "GETConfig", "GETForExpression", "GETForMaskedRegions", "GETModel",
           "GETOutput", "distance_bucket"]
