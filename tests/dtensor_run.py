"""The DTensor measurements test_dtensor.py checks, in a process of their own.

TensorFlow fixes the logical devices when it starts, and the test session's
CPU is split in 2 (conftest.py); a 2 x 2 mesh needs 4, so this runs as
`python tests/dtensor_run.py OUT_DIR` and prints one JSON object.

It trains the tiny GPT for a few SGD steps twice from the same initial
weights and batches, through tfbig's own Trainer: once on one device, once
under `distribute.strategy=dtensor` on a batch=2 x model=2 mesh.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tfbig.config import ConfigError, GPTConfig, MeshConfig, config_from_dict  # noqa: E402
from tfbig import models  # noqa: E402
from tfbig.distribute import make_strategy  # noqa: E402
from tfbig.distribute.dtensor_strategy import MeshStrategy  # noqa: E402
from tfbig.distribute.mesh import MODEL, make_mesh, weight_bytes  # noqa: E402
from tfbig.models.gpt_layout import gpt_layout_scope  # noqa: E402
from tfbig.train import read_metrics  # noqa: E402
from tfbig.train.run import build_trainer  # noqa: E402

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from tensorflow.experimental import dtensor  # noqa: E402

GPT = {"vocab_size": 256, "max_len": 16, "d_model": 32, "num_layers": 2, "num_heads": 4,
       "dropout": 0.0}
STEPS = 4


def config(run_dir, strategy):
    return config_from_dict({
        "model": {"name": "gpt", **GPT}, "data": {"name": "text", "seq_len": 16},
        "train": {"steps": STEPS, "batch_size": 8, "steps_per_execution": 1, "log_every": 1,
                  "eval_every": 0, "eval_steps": 2, "checkpoint_every": STEPS,
                  "progress_bar": False, "schedule": {"name": "constant"},
                  "optimizer": {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9}},
        "distribute": {"strategy": strategy, "mesh": {"batch": 2, "model": 2}},
        "output": {"dir": os.path.join(out_dir, run_dir)},
    })


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Give the sharded model the one-device model's initial weights."""
    for value, weight in zip(source.weights, target.weights):
        layout = dtensor.fetch_layout(weight)
        replicated = dtensor.copy_to_mesh(
            value.read_value(), dtensor.Layout.replicated(layout.mesh, len(value.shape)))
        weight.assign(dtensor.relayout(replicated, layout))


def layouts(model: keras.Model) -> dict:
    return {w.name: dtensor.fetch_layout(w).sharding_specs for w in model.weights}


def losses(trainer) -> list:
    return [r["loss"] for r in read_metrics(trainer.run_dir) if "loss" in r]


def restored_difference(trainer, checkpoint: str) -> float:
    """Largest difference between the trained sharded weights and the same
    checkpoint restored into a plain (DTensor-free) model, as export does."""
    model = models.build_model(GPTConfig(**GPT), trainer.source.spec)
    tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
    differences = []
    for plain_weight, weight in zip(model.weights, trainer.model.weights):
        whole = dtensor.relayout(weight.read_value(),
                                 dtensor.Layout.replicated(strategy.mesh, len(weight.shape)))
        differences.append(float(tf.reduce_max(tf.abs(
            plain_weight.read_value() - dtensor.unpack(whole)[0]))))
    return max(differences)


def mixed_precision_error(mesh) -> str:
    """What asking for a sharded GPT under a mixed precision policy says."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        with gpt_layout_scope(mesh, GPTConfig(**GPT), axis=MODEL):
            pass
    except ConfigError as error:
        return str(error)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return ""


def renamed_layer_error(mesh) -> str:
    """What building a GPT-like model with an unknown layer name under the layout map says."""
    try:
        with gpt_layout_scope(mesh, GPTConfig(**GPT), axis=MODEL):
            inputs = keras.Input((32,))
            keras.Model(inputs, keras.layers.Dense(128, name="block0_ffn_in")(inputs))
    except ConfigError as error:
        return str(error)
    return ""


out_dir = sys.argv[1]
sharded_config, plain_config = config("dtensor", "dtensor"), config("one_device", "one_device")
strategy = make_strategy(sharded_config.distribute)  # first: splits the CPU into 4
assert isinstance(strategy, MeshStrategy)
sharded = build_trainer(sharded_config, strategy)
plain = build_trainer(plain_config, make_strategy(plain_config.distribute))
copy_weights(plain.model, sharded.model)
result = {
    "layouts": layouts(sharded.model),
    "bytes": weight_bytes(sharded.model),
    "slot_layouts": {v.name: dtensor.fetch_layout(v).sharding_specs
                     for v in sharded.optimizer.variables if len(v.shape) > 1},
    "renamed_layer_error": renamed_layer_error(strategy.mesh),
    "mixed_precision_error": mixed_precision_error(strategy.mesh),
}
# A 1 x 4 mesh on the same devices: each device then holds a quarter.
mesh_1x4 = make_mesh(MeshConfig(batch=1, model=4))
with MeshStrategy(mesh_1x4).scope(), gpt_layout_scope(mesh_1x4, GPTConfig(**GPT), axis=MODEL):
    model_1x4 = models.build_model(GPTConfig(**GPT), sharded.source.spec)
result["bytes_1x4"] = weight_bytes(model_1x4)
sharded_result, plain_result = sharded.fit(), plain.fit()
result.update(
    sharded_losses=losses(sharded), plain_losses=losses(plain),
    sharded_eval=sharded_result.eval_metrics, plain_eval=plain_result.eval_metrics,
    checkpoint_max_difference=restored_difference(sharded, sharded_result.checkpoint),
)
print(json.dumps(result))
