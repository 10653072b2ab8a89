"""distribute.strategy=dtensor: the GPT's Megatron-style layouts, what each
device holds, and training through the Trainer that matches one device.

The measurements need 4 logical CPU devices, so they run once, in a fresh
process (tests/dtensor_run.py), and the tests here check its report.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfbig.config import ConfigError, DistributeConfig, GPTConfig, MeshConfig
from tfbig.distribute import StrategyError, make_strategy
from tfbig.models.gpt_layout import check_divisible

UNSHARDED = "unsharded"
# Megatron's split of each block: column-parallel, then row-parallel.
EXPECTED_SHARDED = {
    "token_embedding/embeddings:0": [UNSHARDED, "model"],
    "attention/query/kernel:0": [UNSHARDED, "model", UNSHARDED],
    "attention/key/kernel:0": [UNSHARDED, "model", UNSHARDED],
    "attention/value/kernel:0": [UNSHARDED, "model", UNSHARDED],
    "attention/query/bias:0": ["model", UNSHARDED],
    "attention/key/bias:0": ["model", UNSHARDED],
    "attention/value/bias:0": ["model", UNSHARDED],
    "attention/attention_output/kernel:0": ["model", UNSHARDED, UNSHARDED],
    "mlp_in/kernel:0": [UNSHARDED, "model"],
    "mlp_in/bias:0": ["model"],
    "mlp_out/kernel:0": ["model", UNSHARDED],
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    script = os.path.join(os.path.dirname(__file__), "dtensor_run.py")
    result = subprocess.run([sys.executable, script, str(tmp_path_factory.mktemp("dtensor"))],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def expected_layout(name):
    for suffix, spec in EXPECTED_SHARDED.items():
        if name.endswith(suffix):
            return spec
    return None  # replicated


@pytest.mark.slow
def test_gpt_weights_are_split_column_then_row_parallel(report):
    layouts = report["layouts"]
    assert sum(expected_layout(name) is not None for name in layouts) == 1 + 2 * 10
    for name, spec in layouts.items():
        assert spec == (expected_layout(name) or [UNSHARDED] * len(spec)), name
    # Optimizer slots follow their weights instead of being replicated in full.
    for name, spec in report["slot_layouts"].items():
        assert spec == layouts[name.split("/", 1)[1]], name


@pytest.mark.slow
@pytest.mark.parametrize("mesh,model_axis", [("bytes", 2), ("bytes_1x4", 4)])
def test_each_device_holds_one_model_axis_share_of_the_sharded_weights(report, mesh, model_axis):
    measured = report[mesh]
    assert measured["sharded_total"] > 0.9 * measured["total"]
    for held in measured["sharded_per_device"]:
        assert held == pytest.approx(measured["sharded_total"] / model_axis, rel=0.01)
    replicated = measured["total"] - measured["sharded_total"]
    for held in measured["per_device"]:
        assert held == pytest.approx(measured["sharded_total"] / model_axis + replicated, rel=0.01)


@pytest.mark.slow
def test_sharded_training_matches_one_device(report):
    sharded, plain = report["sharded_losses"], report["plain_losses"]
    assert len(sharded) == len(plain) == 4
    assert plain[-1] < plain[0] - 0.2  # the steps really train
    np.testing.assert_allclose(sharded, plain, rtol=1e-4)
    np.testing.assert_allclose(report["sharded_eval"]["eval_loss"],
                               report["plain_eval"]["eval_loss"], rtol=1e-4)


@pytest.mark.slow
def test_dtensor_checkpoint_restores_into_a_plain_model(report):
    # Export and serving rebuild the model without DTensor from the checkpoint.
    assert report["checkpoint_max_difference"] < 1e-6


@pytest.mark.slow
def test_a_renamed_layer_fails_instead_of_silently_replicating(report):
    assert "block0_ffn_in.kernel" in report["renamed_layer_error"]
    assert "GPT_RULES" in report["renamed_layer_error"]


@pytest.mark.slow
def test_mixed_precision_is_refused_rather_than_left_unsharded(report):
    assert "train.precision=float32" in report["mixed_precision_error"]


def test_a_mesh_that_does_not_split_the_gpt_evenly_names_the_dimensions():
    cfg = GPTConfig(d_model=30, num_heads=3)
    with pytest.raises(ConfigError, match=r"model.num_heads=3.*model.d_model=30"):
        check_divisible(cfg, 4)
    check_divisible(GPTConfig(d_model=32, num_heads=4), 4)


def test_a_mesh_larger_than_the_started_runtime_is_a_clear_error():
    tf.config.list_logical_devices("CPU")  # the runtime starts with conftest's 2 devices
    cfg = DistributeConfig(strategy="dtensor", mesh=MeshConfig(batch=2, model=2))
    with pytest.raises(StrategyError, match=r"needs 4 devices.*fresh process"):
        make_strategy(cfg)
