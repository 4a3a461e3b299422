"""atacformer: transformer foundation models for chromatin accessibility."""

from atacformer.genome import Genome, get_genome
from atacformer.vocab import Vocabulary

__version__ = "0.1.0"
__all__ = ["Genome", "Vocabulary", "get_genome", "__version__"]
