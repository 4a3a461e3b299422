"""atacformer: transformer foundation models for chromatin accessibility."""

from atacformer.genome import Genome, get_genome
from atacformer.vocab import Vocabulary

__version__ = "0.1.0"
__all__ = ["Genome", "Vocabulary", "get_genome", "pl", "pp", "tl", "__version__"]

# scanpy-style short names, imported on first use so that `import atacformer` stays light
_SUBMODULES = {"pp": "atacformer.preprocessing", "tl": "atacformer.tools", "pl": "atacformer.plotting"}


def __getattr__(name):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(_SUBMODULES[name])
    raise AttributeError(f"module 'atacformer' has no attribute {name!r}")
