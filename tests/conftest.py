"""Test-session setup shared by every test module.

TensorFlow fixes the logical device layout at its first op, so the CPU is
split into 2 logical devices here, before any test runs: one process can then
run both one_device and mirrored (2 replicas) strategies. Tests that need
another layout start a fresh process.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

import tfbig  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from tfbig.distribute import split_cpu  # noqa: E402

split_cpu(2)


@pytest.fixture
def float32_policy():
    """Restore the float32 Keras policy after a test that changes it."""
    import tf_keras as keras

    yield
    keras.mixed_precision.set_global_policy("float32")


# A digits MLP small enough to train in a second: 4 steps, checkpoints at 2 and 4.
TINY_RUN_ARGS = ["tfbig/configs/digits_cnn.yaml", "--set", "model={name: mlp, hidden_units: [8]}",
                 "--set", "train.steps=4", "--set", "train.steps_per_execution=2",
                 "--set", "train.log_every=2", "--set", "train.checkpoint_every=2",
                 "--set", "train.eval_every=0", "--set", "train.eval_steps=1",
                 "--set", "train.progress_bar=false"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny run trained by `tfbig train`, shared by a module's tests: copy it to change it."""
    from tfbig.cli import main

    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["train", *TINY_RUN_ARGS, "--output-dir", str(run_dir)]) == 0
    return run_dir


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path):
    """A copy of `tiny_run` (cp -r) this test may change."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    return copy
