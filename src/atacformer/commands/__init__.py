"""Command-line subcommands of the models and preprocessing steps: each module adds its
subparsers and imports its library code only when the command runs, so that building the
parser stays cheap (``atacformer tokenize`` never imports torch)."""
