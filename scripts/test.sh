#!/usr/bin/env bash
# Run tfbig's test suite in its own virtualenv (.venv), built from nothing if absent.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k config -x`. Tests run in two
# pytest-xdist workers, each test file in one of them (its module fixtures built once);
# TFBIG_TEST_WORKERS=N changes the count, 0 runs everything in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv test
exec .venv/bin/python -m pytest -n "${TFBIG_TEST_WORKERS:-2}" --dist loadfile "$@"
