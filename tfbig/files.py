"""Files written whole or not at all.

Every record tfbig writes for later reading (reports, pipeline and lifecycle
records, serving measurements) goes to a temporary file in the same directory
and is renamed over the target: a reader, or a run killed half-way, never
sees half a file. No TensorFlow here, so the report can use it.
"""

from __future__ import annotations

import json
import os
import tempfile


def write_atomic(path: str, data: bytes | str) -> str:
    """Write `data` beside `path`, then rename it over `path`."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".tmp-{os.path.basename(path)}-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; the file is meant to be read
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


def write_json(path: str, value, *, default=None) -> str:
    """`value` as indented JSON, atomically; `default` converts what json cannot."""
    return write_atomic(path, json.dumps(value, indent=2, default=default) + "\n")
