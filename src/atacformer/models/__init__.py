"""Transformer models for chromatin accessibility.

- :mod:`~atacformer.models.atacformer`: Atacformer, replaced-token detection over region
  tokens (LeRoy 2025); loads published geniml checkpoints unchanged.
- :mod:`~atacformer.models.craft`: CRAFT, a contrastive RNA-ATAC dual encoder with a
  Geneformer-style RNA encoder and an RNA decoder (LeRoy 2025, ch. 5).
- :mod:`~atacformer.models.masked_bin`: The masked-bin model with per-chromosome
  (or per-region-class) ``<eos>`` decoding (Ge 2025).
- :mod:`~atacformer.models.multimodal`: the gene-level multimodal RNA + ATAC model (gene
  tokens with binned values, masked value reconstruction, joint embedding; thesis ch. 4).

Every model saves and loads as a folder (``config.json`` + ``model.safetensors`` + the
vocabulary) or a Hugging Face Hub id; :func:`load_model` picks the class, and
:func:`embed_cells` embeds tokenized cells with any of them.
"""

from atacformer.models._collate import as_token_lists, pad_token_lists, subsample_tokens
from atacformer.models._inference import embed_cells, load_model, predict_label_probabilities
from atacformer.models._quality import (
    cell_contrastive_loss,
    idf_weights,
    init_embeddings_from_lsi,
    lsi_loadings,
    token_frequencies,
    two_views,
)
from atacformer.models.atacformer import (
    AtacformerConfig,
    AtacformerForFinetuning,
    AtacformerForProfileReconstruction,
    AtacformerForReplacedTokenDetection,
    AtacformerModel,
    GradientReversal,
    ReplacedTokenCollator,
    mine_triplets,
    replace_tokens,
    reverse_gradient,
)
from atacformer.models.craft import CraftConfig, CraftModel
from atacformer.models.masked_bin import (
    MaskedBinCollator,
    MaskedBinConfig,
    MaskedBinForPretraining,
    MaskedBinModel,
    build_sentence,
    masked_bin_vocabulary,
)
from atacformer.models.multimodal import (
    MultimodalConfig,
    MultimodalForCellClassification,
    MultimodalForMaskedValues,
    MultimodalModel,
    bin_values,
    embed_multimodal,
    fit_value_bins,
    impute_rna,
)

__all__ = [
    "AtacformerConfig",
    "AtacformerForFinetuning",
    "AtacformerForProfileReconstruction",
    "AtacformerForReplacedTokenDetection",
    "AtacformerModel",
    "CraftConfig",
    "CraftModel",
    "MaskedBinCollator",
    "MaskedBinConfig",
    "MaskedBinForPretraining",
    "MaskedBinModel",
    "MultimodalConfig",
    "MultimodalForCellClassification",
    "MultimodalForMaskedValues",
    "MultimodalModel",
    "GradientReversal",
    "ReplacedTokenCollator",
    "as_token_lists",
    "bin_values",
    "build_sentence",
    "cell_contrastive_loss",
    "embed_cells",
    "embed_multimodal",
    "fit_value_bins",
    "idf_weights",
    "impute_rna",
    "init_embeddings_from_lsi",
    "load_model",
    "lsi_loadings",
    "masked_bin_vocabulary",
    "mine_triplets",
    "pad_token_lists",
    "predict_label_probabilities",
    "replace_tokens",
    "reverse_gradient",
    "subsample_tokens",
    "token_frequencies",
    "two_views",
]
