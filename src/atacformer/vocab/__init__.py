"""Vocabularies ("universes"): genomic regions plus special tokens.

Token ids: regions keep their order (``0 .. n_regions - 1``, file order for a BED universe,
genome order for bins), special tokens follow (``n_regions + j``). With the default special
tokens this is exactly the id layout of gtars/geniml tokenizers, so published models'
embedding tables line up row for row.
"""

from atacformer.vocab._vocab import DEFAULT_SPECIAL_TOKENS, Vocabulary

__all__ = ["DEFAULT_SPECIAL_TOKENS", "Vocabulary"]
