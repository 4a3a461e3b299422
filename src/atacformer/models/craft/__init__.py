"""CRAFT: contrastive RNA-ATAC dual encoder, its Geneformer-style RNA encoder and RNA decoder."""

from atacformer.models.craft.configuration_craft import CraftConfig
from atacformer.models.craft.modeling_craft import CraftModel, CraftOutput, clip_loss, rna_inputs
from atacformer.models.craft.rank_encoder import (
    RNA_SPECIAL_TOKENS, RankEncoder, convert_bert_state_dict, gene_nonzero_medians, load_bert_checkpoint,
    load_token_dictionary, log_normalise, rank_genes,
)

__all__ = ["CraftConfig", "CraftModel", "CraftOutput", "RNA_SPECIAL_TOKENS", "RankEncoder", "clip_loss",
           "convert_bert_state_dict", "gene_nonzero_medians", "load_bert_checkpoint", "load_token_dictionary",
           "log_normalise", "rank_genes", "rna_inputs"]
