"""Commands start quiet: TensorFlow's start-up lines are hidden, real errors are not.

`import_tensorflow` is tried against a stand-in `tensorflow` package that
writes what the real one writes to file descriptor 2, so these tests take
a fraction of a second; test_cli checks a real command's stderr.
"""

import os
import subprocess
import sys
import textwrap

import pytest

START_UP_LINES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796224133.564201    7496 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.\n"
    "I0000 00:00:1796224133.661978    7496 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.\n"
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with "
    "the appropriate compiler flags.\n")
REAL_ERROR = "E0000 00:00:1796224133.7 7496 op_kernel.cc:1] something that matters\n"


def import_with_stand_in(tmp_path, *, verbose=False, fail=False):
    package = tmp_path / "tensorflow"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent(f"""\
        import os
        os.write(2, {(START_UP_LINES + REAL_ERROR).encode()!r})
        if {fail!r}:
            raise ImportError("libtensorflow_framework.so.2: cannot open shared object file")
        """))
    probe = ("import os; from tfbig.startup import import_tensorflow\n"
             f"import_tensorflow(verbose={verbose!r}); print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))")
    pythonpath = os.pathsep.join([str(tmp_path), os.getcwd()])
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": pythonpath, "TF_CPP_MIN_LOG_LEVEL": "2"})


def test_start_up_lines_are_hidden_and_other_lines_kept(tmp_path):
    result = import_with_stand_in(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == REAL_ERROR
    assert result.stdout == "3\n"  # TensorFlow's C++ logs after start-up too


def test_verbose_shows_everything(tmp_path):
    result = import_with_stand_in(tmp_path, verbose=True)
    assert result.stderr == START_UP_LINES + REAL_ERROR and result.stdout == "2\n"


def test_a_failed_import_shows_everything(tmp_path):
    result = import_with_stand_in(tmp_path, fail=True)
    assert result.returncode != 0
    assert result.stderr.startswith(START_UP_LINES + REAL_ERROR)
    assert "ImportError: libtensorflow_framework.so.2" in result.stderr


@pytest.mark.parametrize("args", [["--verbose", "info", "x.yaml"], ["info", "x.yaml", "--verbose"]])
def test_verbose_goes_before_or_after_the_command(args):
    from tfbig.cli import build_parser

    assert build_parser().parse_args(args).verbose is True
    assert build_parser().parse_args(["info", "x.yaml"]).verbose is False


def test_a_missing_config_fails_before_tensorflow_loads():
    probe = ("import sys; from tfbig.cli import main\n"
             "status = main(['info', 'missing.yaml']); print(status, 'tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout == "2 False\n"
    assert result.stderr == "tfbig info: error: config file 'missing.yaml' does not exist\n"
