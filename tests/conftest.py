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
