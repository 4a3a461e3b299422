"""TOSICA (Chen 2023): interpretable cell-type annotation with gene-set tokens."""

from atacformer.models.tosica.configuration_tosica import UNANNOTATED, TosicaConfig
from atacformer.models.tosica.modeling_tosica import (
    MaskedGeneSetEmbedding, TosicaModel, TosicaOutput, predict_cells,
)

__all__ = ["MaskedGeneSetEmbedding", "TosicaConfig", "TosicaModel", "TosicaOutput", "UNANNOTATED", "predict_cells"]
