"""The `tfbig` command line and the Keras 2 guard, as a user meets them."""

import os
import subprocess
import sys

import pytest

from tfbig import __version__
from tfbig.cli import main
from tfbig.config import load_config
from tfbig.train import read_metrics


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "tfbig.cli", *args], capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=300,
    )


def test_version_and_help_need_no_tensorflow():
    probe = ("import sys; from tfbig.cli import main\n"
             "try: main(['--version'])\n"
             "except SystemExit: pass\n"
             "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.splitlines() == [f"tfbig {__version__}", "False"]
    help_text = run_cli("--help").stdout
    assert "train" in help_text and "info" in help_text and "examples:" in help_text


@pytest.mark.slow
def test_train_then_extend_the_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    common = ["--set", "model.hidden_units=[16]", "--set", "train.progress_bar=false",
              "--set", "train.steps_per_execution=5", "--set", "train.log_every=5"]
    assert main(["train", "tfbig/configs/digits_cnn.yaml", "--set", "model={name: mlp}",
                 *common, "--set", "train.steps=10", "--output-dir", str(run_dir)]) == 0
    assert f"trained to step 10 in {run_dir}" in capsys.readouterr().out
    # The saved config reproduces the run; a larger train.steps continues it.
    assert main(["train", str(run_dir / "config.yaml"), "--set", "train.steps=20"]) == 0
    assert [r["step"] for r in read_metrics(run_dir) if "loss" in r] == [5, 10, 15, 20]


def test_configs_lists_the_shipped_configs_without_tensorflow():
    probe = ("import sys; from tfbig.cli import main\n"
             "code = main(['configs'])\n"
             "print(code, 'tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd="/")  # by name, from anywhere
    lines = result.stdout.splitlines()
    assert lines[-1] == "0 False"
    listed = dict(line.split(None, 1) for line in lines[:-1])
    assert listed["gpt2_small"].startswith("GPT-2 small's shape")
    assert set(listed) >= {"digits_cnn", "gpt_tiny", "gpt_laptop", "quickstart"}


def test_info_prints_size_flops_and_memory(capsys):
    assert main(["info", "tfbig/configs/gpt_tiny.yaml"]) == 0
    out = capsys.readouterr().out
    assert "model: gpt" in out and "parameters" in out.lower() and "flops" in out.lower()


@pytest.mark.parametrize("args, message", [
    (["train", "missing.yaml"], "config file 'missing.yaml' does not exist"),
    (["train", "tfbig/configs/gpt_tiny.yaml", "--set", "train.steps=-1"],
     "train.steps: -1 (int) is out of range"),
    (["info", "tfbig/configs/gpt_tiny.yaml", "--set", "model.name=bert"],
     "model.name: unknown model 'bert'"),
    (["train", "tfbig/configs/digits_cnn.yaml", "--set", "train.batch_size=9",
      "--set", "distribute.strategy=mirrored"],
     "train.batch_size: 9 cannot be split into 2 replica(s) x 1 accumulation micro-batch(es)"),
    (["train", "tfbig/configs/digits_cnn.yaml", "--set",
      "model={name: transformer_encoder, d_model: 16, max_len: 4}"],
     "model.max_len=4 is shorter than the inputs (8 positions)"),
])
def test_bad_input_is_one_clear_line(args, message, capsys, tmp_path):
    args = args + ["--output-dir", str(tmp_path)] if args[0] == "train" else args
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_a_client_imports_after_keras_3_but_models_fail_clearly():
    # A program that only calls a server needs no Keras; tfbig's models need Keras 2.
    probe = ("import tensorflow as tf; tf.keras.layers\n"
             "from tfbig.serving import Client; Client; print('client imported')\n"
             "import tfbig.models")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env={**os.environ, "TF_USE_LEGACY_KERAS": "0"}, timeout=120)
    assert result.stdout.strip() == "client imported", result.stderr[-2000:]
    assert result.returncode != 0
    assert "tfbig's models need Keras 2 (tf_keras)" in result.stderr
    assert "set TF_USE_LEGACY_KERAS=1" in result.stderr


@pytest.mark.slow
def test_importing_tfbig_after_tensorflow_makes_tf_keras_keras_2():
    # Every training script starts with `import tensorflow as tf`: tf.keras is resolved
    # only when first touched, so tfbig imported next still makes it tf_keras.
    probe = ("import tensorflow as tf; import tfbig, tf_keras\n"
             "print(tf.keras.layers.Dense is tf_keras.layers.Dense)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"},
                            timeout=120)
    assert result.stdout.strip() == "True", result.stderr[-2000:]


@pytest.mark.slow
def test_mirrored_training_from_a_fresh_process_splits_the_cpu(tmp_path):
    # A fresh process, as a user runs it: the CPU split must happen before
    # anything starts TensorFlow's runtime (the test session pre-splits it).
    result = run_cli("train", "tfbig/configs/quickstart.yaml", "--output-dir", str(tmp_path),
                     "--set", "data={name: text, seq_len: 64}", "--set", "train.steps=4", "--set", "train.steps_per_execution=2",
                     "--set", "train.log_every=2", "--set", "train.eval_steps=1",
                     "--set", "train.progress_bar=false")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"trained to step 4 in {tmp_path}" in result.stdout
    # Quiet by default (the test session has TF_CPP_MIN_LOG_LEVEL=2): no CUDA probing,
    # no absl banner, no CPU-feature hint.
    assert "cuda" not in result.stderr.lower() and "absl::InitializeLog" not in result.stderr
    assert "rebuild TensorFlow" not in result.stderr


@pytest.mark.slow
def test_a_copied_run_trains_in_its_own_directory(tiny_run, tiny_run_copy, capsys):
    # cp -r runs/a runs/b; tfbig train runs/b/config.yaml: the saved output.dir names runs/a.
    assert main(["train", str(tiny_run_copy / "config.yaml"), "--set", "train.steps=6"]) == 0
    assert f"trained to step 6 in {tiny_run_copy}" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(tiny_run_copy) if "loss" in r] == [2, 4, 6]
    assert [r["step"] for r in read_metrics(tiny_run) if "loss" in r] == [2, 4]
    # --output-dir (or --set output.dir=...) still chooses another directory.
    assert load_config(tiny_run_copy / "config.yaml", ["output.dir=elsewhere"]).output.dir == "elsewhere"
