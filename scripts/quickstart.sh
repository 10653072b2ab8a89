#!/usr/bin/env bash
# The main job on a fresh machine: build .venv, install tfbig, then run the
# whole pipeline on the quickstart config: prepare a token dataset (a BPE
# tokenizer and shards) from the Python standard library's own source, train a
# SentencePiece GPT on it (MirroredStrategy over 2 replicas), prune it, export a
# version with the tokenizer inside, validate it in a real server, promote it
# (canary, then stable), serve it, send a generate request through the bundled
# client, measure latency and write the report.
# Extra arguments go to `tfbig pipeline`, e.g. --set train.steps=100, or
# --set 'data={name: text, seq_len: 64}' for the byte-level GPT.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv
RUN_DIR="${RUN_DIR:-runs/quickstart}"
.venv/bin/tfbig info tfbig/configs/quickstart.yaml
.venv/bin/tfbig pipeline tfbig/configs/quickstart.yaml --output-dir "$RUN_DIR" "$@"
echo "run directory: $RUN_DIR (dataset/, config.yaml, checkpoints/, metrics.jsonl, pipeline.json, report/)"
echo "versions:      .venv/bin/tfbig models list --model-base-path $RUN_DIR/models/quickstart"
