"""Files and directories written whole or not at all.

Every record tfbig writes for later reading (reports, pipeline and lifecycle
records, serving measurements) goes to a temporary file in the same directory
and is renamed over the target: a reader, or a run killed half-way, never
sees half a file. A directory (an exported version, a measured SavedModel) is
built the same way in `staged_directory`. No TensorFlow here, so the report
can use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile


def write_atomic(path: str, data: bytes | str, *, mode: int = 0o644) -> str:
    """Write `data` beside `path`, then rename it over `path`; the file gets `mode`
    (0o600 for a secret such as a private key: it is never readable by others, not even
    for a moment)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".tmp-{os.path.basename(path)}-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(temporary, mode)  # mkstemp makes it private; most files are meant to be read
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


def write_json(path: str, value, *, default=None) -> str:
    """`value` as indented JSON, atomically; `default` converts what json cannot."""
    return write_atomic(path, json.dumps(value, indent=2, default=default) + "\n")


@contextlib.contextmanager
def staged_directory(path: str, *, prefix: str = ".tmp-"):
    """Yield an empty directory beside `path` that becomes `path` once the block succeeds.

    It is made in `path`'s parent (the same filesystem, so the final rename is
    atomic) and readable like any directory the user creates: mkdtemp's 0700
    would hide it from a server run as another user. An existing `path` is
    swapped out only once the new one is complete (renamed aside, then
    deleted). If the block raises, the staged directory is removed and `path`
    is as it was.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        os.chmod(staging, 0o777 & ~_umask())
        yield staging
        _publish(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(staging: str, path: str) -> None:
    if not os.path.exists(path):
        os.rename(staging, path)
        return
    retired = tempfile.mkdtemp(prefix=".retired-", dir=os.path.dirname(os.path.abspath(path)))
    os.rename(path, os.path.join(retired, "old"))
    os.rename(staging, path)
    shutil.rmtree(retired, ignore_errors=True)
