#!/usr/bin/env bash
# Run as: bash recipes/setup_env.sh
# Creates .venv (Python 3.11) and installs dsdrive with every dependency, offline-safe and idempotent:
# a second run with an unchanged pyproject.toml returns in about a second.
#
# torch: the machine's local wheel folder may hold a CPU-only torch with no matching torchvision
# (qwen-vl-utils imports torchvision), so the matched pair is taken from the package registry with
# the local wheel folder ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=.venv
STAMP="$VENV/.dsdrive-installed"
want=$(cat pyproject.toml recipes/setup_env.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/pip"
# Registry-only pip for torch/torchvision (no local find-links, no config file).
env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "$PIP" install --quiet "torch==2.13.0" "torchvision==0.28.0"
"$PIP" install --quiet -e ".[dev,sim]"
# metadrive-simulator drags opencv back; keep the numpy<2 pair explicit.
"$PIP" install --quiet "numpy<2" "opencv-python<5" "pyarrow<26"
"$VENV/bin/python" -c "import torch, torchvision, transformers, peft, trl, accelerate, datasets, qwen_vl_utils, nuscenes, dsdrive; print('dsdrive environment ready: torch', torch.__version__, 'transformers', transformers.__version__)"
# MetaDrive downloads its assets from GitHub on first use; offline, create the stub that state/BEV
# simulation needs (prints a WARNING when it does; never downloads).
"$VENV/bin/python" -m dsdrive.evaluation.closed_loop.metadrive_assets
echo "$want" > "$STAMP"
