# Sourced by quickstart.sh and test.sh: build .venv if absent and install tfbig
# into it, with the extras named in $1 (e.g. "test"), from the package registry.
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".${1:+[$1]}"
