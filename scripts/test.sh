#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the default test suite (slow and GPU tests deselected / skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m pytest -m "not slow" -q "$@"
