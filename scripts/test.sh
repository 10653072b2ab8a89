#!/usr/bin/env bash
# Run tfbig's test suite in its own virtualenv (.venv), built from nothing if absent.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k config -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv test
exec .venv/bin/python -m pytest "$@"
