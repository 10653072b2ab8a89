"""TensorFlow started quietly, for the command line.

Importing TensorFlow on a machine without a GPU prints its CUDA probing
("Could not find cuda drivers"), CPU feature hints ("rebuild TensorFlow with
the appropriate compiler flags") and absl's banner "All log messages before
absl::InitializeLog() is called are written to STDERR", once per native
library that logs before absl is set up. TF_CPP_MIN_LOG_LEVEL governs only
what is logged after that (such as "failed call to cuInit" at the first op),
so it alone cannot silence them, and a user reads them as errors.

So a tfbig command sets TF_CPP_MIN_LOG_LEVEL=3 and imports TensorFlow with the
process's stderr (file descriptor 2, where the native code writes) captured;
afterwards it replays what was captured except those start-up lines, so
anything else still shows, and if the import fails it replays everything.
`tfbig --verbose` or TFBIG_LOG=1 leaves TensorFlow's logging as it is.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import tempfile

# The start-up lines TensorFlow's native code writes while it is imported:
# absl's banner, glog-style INFO/WARNING lines (I0000 ..., W0000 ...), the
# CPU-feature hint's second line, and cuDNN/cuFFT/cuBLAS double registration.
START_UP_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] "
    r"|To enable the following instructions: .* rebuild TensorFlow"
    r"|E\d{4} .*Unable to register cu(DNN|FFT|BLAS) factory")


def verbose_from_env() -> bool:
    """TFBIG_LOG=1 (any value but empty or 0) shows TensorFlow's logs."""
    return os.environ.get("TFBIG_LOG", "") not in ("", "0")


def import_tensorflow(*, verbose: bool = False) -> None:
    """Import TensorFlow now, without its start-up lines unless `verbose`."""
    if "tensorflow" in sys.modules:
        return
    if verbose:
        importlib.import_module("tensorflow")
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # from here on, C++ logs below FATAL are hidden
    failed = True
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            importlib.import_module("tensorflow")
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            sys.stderr.write(text if failed else without_start_up_noise(text))
            sys.stderr.flush()


def without_start_up_noise(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not START_UP_NOISE.match(line))
