"""The ATAC-aware DNA ranking model (LeRoy 2025, ch. 3)."""

from atacformer.models.dna_ranker.configuration_dna_ranker import DnaRankerConfig
from atacformer.models.dna_ranker.modeling_dna_ranker import (
    DnaRankerModel, DnaRankerOutput, listnet_loss, one_hot, target_distribution,
)

__all__ = ["DnaRankerConfig", "DnaRankerModel", "DnaRankerOutput", "listnet_loss", "one_hot",
           "target_distribution"]
