"""The errors tfbig raises on purpose, in two kinds a caller can tell apart.

Every error class in tfbig derives from `UsageError` (the input was wrong:
a config value, a path, a flag; fix it and run again) or `RunError` (the
input was fine but the work failed: a diverged run, damaged checkpoints, a
full disk, a server that does not answer). The command line turns either into
one line `tfbig CMD: error: MESSAGE` and exits with the class's `exit_code`
(2 or 1, as argparse and most tools do); the pipeline turns either into a
failed stage. Anything else is a bug and keeps its traceback.

The specific classes (ConfigError, CheckpointError, ...) stay where callers
catch them; some keep ValueError or RuntimeError as a second base because
callers catch them as such. This module imports nothing, so any module can
use it without pulling in TensorFlow.
"""


class TfbigError(Exception):
    """Something tfbig can explain in one line; `exit_code` is what the CLI exits with."""

    exit_code = 1


class UsageError(TfbigError):
    """The input is wrong (a config value, a path, a flag): fix it and run again."""

    exit_code = 2


class RunError(TfbigError):
    """The input was fine but the work failed (diverged, damaged, full, unreachable)."""

    exit_code = 1
