"""The gene-level multimodal RNA + ATAC model (thesis ch. 4): gene tokens with binned values,
masked value reconstruction, a joint embedding that is the mean of the modalities'."""

from atacformer.models.multimodal.configuration_multimodal import MODALITIES, MultimodalConfig
from atacformer.models.multimodal.inference import embed_multimodal, impute_rna
from atacformer.models.multimodal.modeling_multimodal import (
    CellClassificationOutput,
    MultimodalEmbeddings,
    MultimodalForCellClassification,
    MultimodalForMaskedValues,
    MultimodalModel,
    MultimodalOutput,
    joint_embedding,
)
from atacformer.models.multimodal.values import (
    ZERO_VALUE,
    GeneTokens,
    ValueBins,
    bin_values,
    fit_value_bins,
    gene_idf,
    gene_tokens,
    normalize_values,
)

__all__ = [
    "MODALITIES",
    "ZERO_VALUE",
    "CellClassificationOutput",
    "GeneTokens",
    "MultimodalConfig",
    "MultimodalEmbeddings",
    "MultimodalForCellClassification",
    "MultimodalForMaskedValues",
    "MultimodalModel",
    "MultimodalOutput",
    "ValueBins",
    "bin_values",
    "embed_multimodal",
    "fit_value_bins",
    "gene_idf",
    "gene_tokens",
    "impute_rna",
    "joint_embedding",
    "normalize_values",
]
