#!/usr/bin/env bash
# The main job on a fresh machine: build .venv, install tfbig, train the
# quickstart GPT on the bundled corpus (MirroredStrategy over 2 replicas),
# then evaluate it. Extra arguments go to `tfbig train`, e.g. --set train.steps=100.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv
RUN_DIR="${RUN_DIR:-runs/quickstart}"
.venv/bin/tfbig info tfbig/configs/quickstart.yaml
.venv/bin/tfbig train tfbig/configs/quickstart.yaml --output-dir "$RUN_DIR" "$@"
echo
echo "run directory: $RUN_DIR (config.yaml, checkpoints/, logs/, metrics.jsonl)"
echo "metrics:       tail $RUN_DIR/metrics.jsonl"
echo "continue it:   .venv/bin/tfbig train $RUN_DIR/config.yaml --set train.steps=800"
