#!/usr/bin/env bash
# Create .venv with a CPU build of PyTorch and atacformer (editable) with its test, peer and
# integration (scib-metrics, harmonypy) extras.
# GPU users: install your own CUDA build of torch into the venv first; this script keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test,peers,integration,peaks,distributed,eval]"
# geniml (test-only): its Atacformer code needs transformers < 5; its other dependencies are not needed
python -c "import geniml" 2>/dev/null || { python -m pip install -q "transformers>=4.52.4,<5" && python -m pip install -q --no-deps geniml==0.8.4; }
