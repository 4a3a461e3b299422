"""Tokenizers: fragments files, peak matrices and BED files -> vocabulary token ids."""

from atacformer.tokenizers._cells import TokenizedCells
from atacformer.tokenizers.fragments import tokenize_fragments
from atacformer.tokenizers._inputs import input_kind, peak_vocabulary, tokenize_input, tokenize_paths
from atacformer.tokenizers.regions import region_token_pairs, tokenize_bed, tokenize_peak_matrix

__all__ = ["TokenizedCells", "input_kind", "peak_vocabulary", "region_token_pairs", "tokenize_bed", "tokenize_fragments",
           "tokenize_input", "tokenize_paths", "tokenize_peak_matrix"]
