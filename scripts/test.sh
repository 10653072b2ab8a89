#!/usr/bin/env bash
# Run tfbig's test suite in its own virtualenv (.venv), built from nothing if absent.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k config -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
exec .venv/bin/python -m pytest "$@"
