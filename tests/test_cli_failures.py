"""Every documented way a `tfbig` command fails ends in one line and exit 1 or 2.

Each case is a failure a user meets (a bad config, a missing run, damaged
checkpoints, a full disk, a busy port, an unreachable server, Ctrl-C) and is
checked the same way: the exit status, the first line of stderr
`tfbig CMD: error: ...` and no traceback. Calls are in-process where they
can be; one tiny trained run is shared by the cases that need a run.
"""

import errno
import os
import re
import socket
from pathlib import Path

import pytest

import tfbig
from tfbig.cli import main
from tfbig.errors import RunError, UsageError

def assert_one_line_error(capsys, command: str, status: int, code: int, *, match: str = "") -> str:
    """The command exited `code` with `tfbig COMMAND: error: ...` first and no traceback."""
    err = capsys.readouterr().err
    assert status == code, err
    assert err.startswith(f"tfbig {command}: error: "), err
    assert "Traceback" not in err
    assert re.search(match, err.splitlines()[0]), err
    return err


def test_every_tfbig_error_is_a_usage_or_a_run_error():
    source = Path(tfbig.__file__).parent
    defined = {m.group(1): path for path in source.rglob("*.py")
               for m in re.finditer(r"^class (\w+Error)\(", path.read_text(), re.M)}
    assert len(defined) >= 16
    for name, path in defined.items():
        if path.name == "errors.py" and path.parent == source:
            continue  # the hierarchy itself
        module = ".".join(path.relative_to(source.parent).with_suffix("").parts)
        cls = getattr(__import__(module, fromlist=[name]), name)
        assert issubclass(cls, (UsageError, RunError)), f"{module}.{name}"


# ------------------------------------------------------------------- train


@pytest.mark.slow
def test_train_with_every_checkpoint_damaged(tiny_run_copy, capsys):
    for data_file in (tiny_run_copy / "checkpoints").glob("ckpt-*.data-*"):
        data_file.write_bytes(b"")
    with pytest.warns(UserWarning, match="unreadable"):
        status = main(["train", str(tiny_run_copy / "config.yaml"), "--set", "train.steps=6"])
    assert_one_line_error(capsys, "train", status, 1, match="no readable checkpoint in .*ckpt-4, ckpt-2 "
                                                            "are damaged. Move the directory away")


# ------------------------------------------------------------------ export


def _disk_full_in_savedmodel(obj, export_dir, **kwargs):
    """tf.saved_model.save on a full disk: some bytes written, then SaveV2 fails."""
    import tensorflow as tf

    os.makedirs(os.path.join(export_dir, "variables"))
    Path(export_dir, "variables", "variables.data-00000-of-00001").write_bytes(b"\0" * 100)
    raise tf.errors.ResourceExhaustedError(
        None, None, "{{function_node __wrapped__SaveV2_dtypes_2_device_/job:localhost/replica:0/task:0"
                    "/device:CPU:0}} variables_temp/part-00000-of-00001.data-00000-of-00001.tempstate1; "
                    "No space left on device [Op:SaveV2]")


def _disk_full_in_python(export_dir, logs):
    Path(export_dir, "assets.extra").mkdir()
    raise OSError(errno.ENOSPC, "No space left on device", str(Path(export_dir, "assets.extra", "x")))


@pytest.mark.parametrize("target, fail", [("tensorflow.saved_model.save", _disk_full_in_savedmodel),
                                          ("tfbig.export.exporter.write_warmup", _disk_full_in_python)])
def test_export_onto_a_full_disk(tiny_run, tmp_path, monkeypatch, capsys, target, fail):
    monkeypatch.setattr(target, fail)
    base = tmp_path / "models"
    status = main(["export", str(tiny_run), "--model-base-path", str(base)])
    assert_one_line_error(capsys, "export", status, 1,
                          match=f"version 1 could not be written to {base}: .*No space left on device"
                                f".*; nothing was left behind$")
    assert os.listdir(base) == []  # no version, no hidden staging directory


def test_export_interrupted_leaves_no_version(tiny_run, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("tensorflow.saved_model.save", interrupted)
    base = tmp_path / "models"
    status = main(["export", str(tiny_run), "--model-base-path", str(base)])
    assert_one_line_error(capsys, "export", status, 130, match="interrupted; nothing was written$")
    assert os.listdir(base) == []


# ------------------------------------------------------- every command's bad input


@pytest.mark.parametrize("args, match", [
    (["train", "{tmp}/missing.yaml"], "config file '.*/missing.yaml' does not exist"),
    (["train", "{tmp}/bad.yaml"], "config file '.*/bad.yaml' is not valid YAML"),
    (["train", "tfbig/configs/digits_cnn.yaml", "--set", "train.steps=0"], "train.steps: 0"),
    (["train", "tfbig/configs/digits_cnn.yaml", "--bogus"], r"unrecognized arguments: --bogus \(see tfbig"),
    (["info", "{tmp}/missing.yaml"], "config file '.*/missing.yaml' does not exist"),
    (["train", "gpt_tiyn"], "'gpt_tiyn' is neither a config file nor a shipped config "
                            r"\(did you mean 'gpt_tiny'\?\); shipped configs: digits_cnn, "),
    (["info", "gpt_tiny", "--set", "model.vocab_size=300"],
     "model.vocab_size: 300 differs from the data's vocabulary of 256 tokens"),
    (["configs", "gpt_tiny"], r"unrecognized arguments: gpt_tiny \(see tfbig configs"),
    (["pipeline", "tfbig/configs/quickstart.yaml", "--until", "deploy"], "--until 'deploy'"),
    (["export", "{tmp}/no-run"], "'.*/no-run' is not a tfbig run directory"),
    (["compress", "{tmp}/no-run"], "'.*/no-run' is not a tfbig run directory"),
    (["report", "{tmp}/no-run", "--no-open"], ".*/no-run is not a run directory"),
    (["models", "list", "--model-base-path", "{tmp}/no-base"], "model base path '.*/no-base' does not exist"),
    (["serve", "--model_name=m", "--model_base_path={tmp}/no-base", "--port={busy}"],
     "--port=.*: cannot listen on 0.0.0.0:.*: Address already in use"),
    (["launch", "--workers", "0", "--", "true"], "--workers must be at least 1"),
    (["launch", "--workers", "1", "--", "{tmp}/no-command"], "cannot start the command"),
])
def test_bad_input_is_one_line_exit_2(args, match, tmp_path, busy_port, capsys):
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    args = [a.format(tmp=tmp_path, busy=busy_port) for a in args]
    status = run_main(args)
    assert_one_line_error(capsys, args[0], status, 2, match=match)


# --------------------------------------------------------- failed work: exit 1


def test_train_interrupted_says_how_to_resume(tiny_run_copy, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("tfbig.train.run.build_trainer", interrupted)
    status = main(["train", str(tiny_run_copy / "config.yaml"), "--set", "train.steps=6"])
    assert_one_line_error(capsys, "train", status, 130, match="interrupted; resume from the last "
                                                              "checkpoint by running the same command")


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_predict_from_an_unreachable_server(protocol, free_port, capsys):
    status = main(["predict", f"127.0.0.1:{free_port}", "digits", "--inputs", "[[0]]",
                   "--protocol", protocol, "--timeout", "1"])
    assert_one_line_error(capsys, "predict", status, 1, match="UNAVAILABLE: .*127.0.0.1")


@pytest.mark.slow
def test_models_promote_with_an_unreachable_server(tiny_run, tmp_path, free_port, capsys):
    from tfbig.lifecycle import ModelRegistry

    base = tmp_path / "models"
    assert main(["export", str(tiny_run), "--model-base-path", str(base)]) == 0
    ModelRegistry(str(base)).record_validation(1, {"passed": True})  # as `models verify` would
    capsys.readouterr()
    status = main(["models", "promote", "1", "--model-base-path", str(base),
                   "--server", f"127.0.0.1:{free_port}"])
    assert_one_line_error(capsys, "models", status, 1, match="UNAVAILABLE: .*127.0.0.1")


# ----------------------------------------------------------------- helpers


def run_main(args) -> int:
    """main(args), with argparse's SystemExit (a bad flag) as a status."""
    try:
        return main(args)
    except SystemExit as exit:
        return exit.code


@pytest.fixture
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        yield s.getsockname()[1]
