#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job on real data (../shared/data), or synthetic data without it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
atacformer demo --out results "$@"
