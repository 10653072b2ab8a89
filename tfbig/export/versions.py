"""TF Serving's model base path: integer version directories, written atomically.

`tensorflow_model_server --model_base_path=DIR` serves the integer-named
subdirectories of DIR and ignores everything else. A version is built in a
hidden temporary directory inside DIR (same filesystem, so `os.rename` is
atomic) and renamed to its number only once complete: a server polling DIR
never sees a half-written version.
"""

from __future__ import annotations

import contextlib
import os
import re

from tfbig.atoi import simple_atoi
from tfbig.export.errors import ExportError, VersionWriteError
from tfbig.files import staged_directory

# The folder of a version that TF Serving leaves alone: warmup requests,
# tfbig's manifest and the ONNX/TFLite artifacts live there.
ASSETS_EXTRA = "assets.extra"


def existing_versions(base_path: str) -> list[int]:
    """The versions TF Serving would find in `base_path`."""
    if not os.path.isdir(base_path):
        return []
    return sorted(version for name in os.listdir(base_path)
                  if (version := simple_atoi(name)) is not None and os.path.isdir(os.path.join(base_path, name)))


def next_version(base_path: str) -> int:
    versions = existing_versions(base_path)
    return versions[-1] + 1 if versions else 1


def check_version(base_path: str, version: int, *, overwrite: bool = False) -> None:
    """Raise ExportError unless `version` may be written into `base_path`."""
    if version < 1:
        raise ExportError(f"version must be a positive integer, got {version}")
    if os.path.exists(os.path.join(base_path, str(version))) and not overwrite:
        raise ExportError(f"version {version} already exists in {base_path!r}; pass another "
                          f"version, or overwrite=True (--overwrite) to replace it")


@contextlib.contextmanager
def staged_version(base_path: str, version: int, *, overwrite: bool = False,
                   write_errors: tuple[type[BaseException], ...] = (OSError,)):
    """Yield a temporary directory that becomes `base_path/version` if the block succeeds.

    On any exception the temporary directory is removed and no version
    appears. With `overwrite`, an existing version is swapped out (renamed
    aside, then deleted) only after the new one is complete. A `write_errors`
    exception (a full disk, no permission; TensorFlow's writes raise its own
    types, hence the parameter) becomes one VersionWriteError saying which
    version could not be written where, and that nothing was left behind.
    """
    check_version(base_path, version, overwrite=overwrite)
    staging = None
    try:
        with staged_directory(os.path.join(base_path, str(version)), prefix=f".tmp-{version}-") as staging:
            yield staging
    except BaseException as error:
        if isinstance(error, write_errors):
            raise VersionWriteError(_not_written(version, base_path, staging, error)) from error
        raise


def _not_written(version: int, base_path: str, staging: str | None, error: BaseException) -> str:
    left = (f"its staging directory {staging} could not be removed; delete it by hand"
            if staging is not None and os.path.exists(staging) else "nothing was left behind")
    # TensorFlow prefixes its op errors with the function's name: {{function_node ...}}.
    reason = re.sub(r"\{\{.*?\}\}\s*", "", " ".join(str(error).split())) or type(error).__name__
    return f"version {version} could not be written to {base_path}: {reason}; {left}"
