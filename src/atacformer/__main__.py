"""``python -m atacformer``: the command line (what ``torchrun -m atacformer`` runs)."""

from atacformer.cli import main

if __name__ == "__main__":  # not when a spawned worker re-imports this module
    raise SystemExit(main())
