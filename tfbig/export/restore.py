"""A trained run directory back in memory: config, data, model weights, metrics.

Export needs the model exactly as training left it, plus what the manifest
records about it (step, eval metrics) and real examples for warmup and parity
checks, all of which the run directory holds.
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf
import tf_keras as keras

from tfbig import data as tfdata
from tfbig import models
from tfbig.config import Config, load_config
from tfbig.export.errors import ExportError
from tfbig.rundir import RunDir
from tfbig.train import read_metrics


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    config: Config
    source: tfdata.DataSource
    model: keras.Model
    step: int
    checkpoint: str
    eval_metrics: dict


def restore_run(run_dir: str, checkpoint: str | None = None) -> TrainedModel:
    """Rebuild the model of `run_dir` and load its latest (or the given) checkpoint."""
    config_path = RunDir(run_dir).config
    if not os.path.isfile(config_path):
        raise ExportError(f"{run_dir!r} is not a tfbig run directory: {config_path} is missing "
                          f"(train one with `tfbig train CONFIG --output-dir {run_dir}`)")
    config = load_config(config_path)
    checkpoint = checkpoint or tf.train.latest_checkpoint(RunDir(run_dir).checkpoints)
    if not checkpoint:
        raise ExportError(f"{run_dir!r} has no checkpoint yet; train it first")
    if not tf.io.gfile.exists(checkpoint + ".index"):
        raise ExportError(f"checkpoint {checkpoint!r} does not exist")
    with models.precision_policy(config.train.precision):
        source = tfdata.load_data(config.data)
        model = models.build_model(config.model, source.spec)
        method = _compression(config, source.spec.task)
        if method:  # a run made by `tfbig compress`: its checkpoint holds the wrapped model
            model = method.wrap(model)
    step = tf.Variable(0, dtype=tf.int64)
    # Only the model and the step: optimizer slots and RNG state stay behind.
    status = tf.train.Checkpoint(model=model, step=step).restore(checkpoint)
    status.expect_partial().assert_existing_objects_matched()
    if method:
        model = method.finalize(model)
    return TrainedModel(
        config=config, source=source, model=model, step=int(step.numpy()),
        checkpoint=checkpoint, eval_metrics=_last_eval_metrics(run_dir, int(step.numpy())),
    )


def _compression(config: Config, task: str):
    """The compression method of a compressed run, or None (imports TF-MOT only then)."""
    if config.compress.method == "none":
        return None
    from tfbig.train.compression.methods import make_method

    return make_method(config, task=task)


def float32_model(trained: TrainedModel) -> keras.Model:
    """`trained.model`, or a float32 twin with its weights if it was trained in mixed precision.

    ONNX Runtime and TFLite run CPU graphs best (or only) in float32: tf2onnx
    emits mismatched float16/bfloat16 types for a mixed_bfloat16 graph.
    Mixed-precision variables are float32 already, so the twin is exact.
    """
    if trained.config.train.precision == "float32":
        return trained.model
    with models.precision_policy("float32"):
        twin = models.build_model(trained.config.model, trained.source.spec)
    twin.set_weights(trained.model.get_weights())
    return twin


def _last_eval_metrics(run_dir: str, step: int) -> dict:
    """The newest eval record at or before `step` (the checkpoint exported)."""
    try:
        records = read_metrics(run_dir)
    except FileNotFoundError:
        return {}
    evals = [r for r in records if r["step"] <= step and any(k.startswith("eval_") for k in r)]
    if not evals:
        return {}
    last = evals[-1]
    return {"step": last["step"], **{k: v for k, v in last.items() if k.startswith("eval_")}}
