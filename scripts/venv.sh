# Sourced by quickstart.sh and test.sh. `ensure_venv [EXTRAS]` builds .venv if
# absent and installs tfbig into it, with EXTRAS (e.g. "test"), from the registry.
# A function, not top-level code: a sourced file sees the caller's arguments.
ensure_venv() {
    local python="${PYTHON:-python3}"
    if [ ! -x .venv/bin/python ]; then
        "$python" -m venv .venv
    fi
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".${1:+[$1]}"
}
