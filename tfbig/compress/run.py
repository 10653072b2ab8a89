"""`tfbig compress RUN_DIR`: a trained run -> a compressed run directory and a report.

The output directory is an ordinary run directory: `config.yaml` (the run's
config with the `compress:` section that made it, and the fine-tuning
schedule as `train:`), `checkpoints/`, `metrics.jsonl`. `tfbig export OUT`
therefore exports the compressed model like any other (see
`tfbig.export.restore`), and re-running the same command resumes an
interrupted fine-tuning instead of starting over.

Next to it: `artifacts/` with what the report measured (the float
SavedModel before, the compressed SavedModel or TFLite file after), and
`report.json`, `report.md`, `report.png` (see `tfbig.compress.report`); the
names are `tfbig.rundir.RunDir`'s.

Fine-tuning runs in float32 without XLA whatever the run used: TF-MOT's
wrappers and fake-quant ops are float32 graphs.
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf
import tf_keras as keras
import yaml

from tfbig import models
from tfbig.compress import report as reports
from tfbig.config import (CompressConfig, Config, ConfigError, apply_overrides, config_from_dict,
                          config_to_dict)
from tfbig.config import save_config
from tfbig.config.schema import COMPRESS_METHODS
from tfbig.distribute import make_strategy
from tfbig.export.exporter import calibration_examples
from tfbig.export.restore import TrainedModel, float32_model, restore_run
from tfbig.export.signatures import predict_function
from tfbig.export.tflite import convert_int8, convert_tflite, tflite_file
from tfbig.rundir import RunDir
from tfbig.train.checkpoint import Checkpointer
from tfbig.train.compression.distill import is_saved_model, saved_model_teacher
from tfbig.train.compression.method import Method
from tfbig.train.compression.methods import PTQ_VARIANTS, make_method
from tfbig.train.optim import make_optimizer
from tfbig.train.run import check_resumable
from tfbig.train.trainer import Trainer

# `--set` may change how to compress and where to fine-tune, never what was trained.
OVERRIDABLE_SECTIONS = ("compress", "distribute")


@dataclasses.dataclass(frozen=True)
class CompressResult:
    output_dir: str
    method: str
    before: dict
    after: dict
    files: dict[str, str]  # report.json / report.md / report.png / artifact -> path


# TF-MOT wraps these layer by layer, so it must see the blocks' own layers.
LAYER_WRAPPING_METHODS = ("prune", "qat", "cluster")


def compress_run(run_dir: str, *, method: str | None = None, overrides: tuple[str, ...] = (),
                 compress: CompressConfig | None = None, output_dir: str | None = None) -> CompressResult:
    """Compress the latest checkpoint of `run_dir` with `method` (or the config's).

    `compress` replaces the run's `compress:` section (the pipeline passes its own);
    `overrides` and `method` then apply on top of it.
    """
    config = compress_config(run_dir, method, overrides, compress)
    method = config.compress.method
    # The strategy before any TensorFlow op: on CPU it may still split the device.
    strategy = make_strategy(config.distribute)
    source = restore_run(run_dir)
    if source.config.compress.method == "qat":
        raise ConfigError(f"{run_dir!r} is quantization-aware already; compress the float run "
                          f"it was made from instead")
    if method in LAYER_WRAPPING_METHODS and getattr(config.model, "recompute", False):
        raise ConfigError(
            f"compress --method {method} wraps the blocks' Dense and attention layers, which "
            f"model.recompute=true hides inside one layer per block; train the run with "
            f"model.recompute=false to {method} it (ptq-* and distill work either way)")
    out_dir = output_dir or f"{os.path.normpath(run_dir)}-{method}"
    out_config = output_config(config, out_dir)
    check_resumable(out_config, out_dir)
    os.makedirs(out_dir, exist_ok=True)
    save_config(out_config, RunDir(out_dir).config)

    probe = make_method(out_config, task=source.source.spec.task)
    if probe.trains:
        compression, fine_tuned = fine_tune(source, out_config, strategy)
        details = {**method_details(compression), "fine_tuning": fine_tuned}
    else:
        save_weights(source, out_dir)
        details = {}
    compressed = restore_run(out_dir)
    return measure(source, compressed, out_dir, details)


def compress_config(run_dir: str, method: str | None, overrides,
                    compress: CompressConfig | None = None) -> Config:
    """The run's config with `compress` as its section, `--set` overrides (compress/distribute
    only) and `method`."""
    path = RunDir(run_dir).config
    if not os.path.isfile(path):
        raise ConfigError(f"{run_dir!r} is not a tfbig run directory: {path} is missing")
    for override in overrides:
        if override.partition("=")[0].split(".", 1)[0] not in OVERRIDABLE_SECTIONS:
            raise ConfigError(f"override {override!r}: only {', '.join(OVERRIDABLE_SECTIONS)}.* "
                              f"can change when compressing; the model and data are the run's")
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    if compress is not None:
        raw["compress"] = config_to_dict(compress)
    if method is not None:
        raw.setdefault("compress", {})["method"] = method
    config = config_from_dict(apply_overrides(raw, overrides))
    if config.compress.method == "none":
        raise ConfigError(f"compress.method: choose one of {', '.join(COMPRESS_METHODS)} "
                          f"(--method or compress.method in the config)")
    if config.compress.method == "distill" and config.compress.distill.student is None:
        raise ConfigError("compress.distill.student: distillation needs a student model, e.g. "
                          "--set 'compress.distill.student={name: gpt, d_model: 64}'")
    return config


def output_config(config: Config, out_dir: str) -> Config:
    """The compressed run's config: what it was trained as (fine-tuning) and from what.

    Fine-tuning runs `compress.steps` at the training peak learning rate (or
    `compress.learning_rate`) with cosine decay: pruning needs a rate high
    enough to recover while sparsity ramps up (a tenth of it left a small
    CNN at 47% after a 75% ramp, the full rate at 80%), and the decay lets
    the last steps settle.
    """
    c = config.compress
    raw = config_to_dict(config)
    train = raw["train"]
    train.update(steps=c.steps, precision="float32", jit_compile=False,
                 early_stopping={"metric": ""})  # stopping mid-ramp would miss the target
    if c.learning_rate:
        train["optimizer"]["learning_rate"] = c.learning_rate
    train["schedule"] = {**train["schedule"], "name": "cosine", "decay_steps": 0,
                         "warmup_steps": min(train["schedule"]["warmup_steps"], c.steps // 10)}
    if c.method == "distill":
        raw["model"] = config_to_dict(c.distill.student)
    raw["output"]["dir"] = out_dir
    return config_from_dict(raw)


def fine_tune(source: TrainedModel, config: Config, strategy) -> tuple[Method, dict]:
    """Wrap, fine-tune (resuming if interrupted) and return the method and final metrics."""
    with models.precision_policy("float32"):
        keras.utils.set_random_seed(config.train.seed)
        with strategy.scope():
            model = models.build_model(config.model, source.source.spec)
            teacher = None
            if config.compress.method == "distill":
                teacher = load_teacher(config.compress.distill.teacher, source)
            else:
                model.set_weights(float32_model(source).get_weights())
            method = make_method(config, task=source.source.spec.task, teacher=teacher)
            wrapped = method.wrap(model)
            optimizer = make_optimizer(config.train)
        trainer = Trainer(
            model=wrapped, optimizer=optimizer, strategy=strategy, source=source.source,
            config=config.train, run_dir=config.output.dir, data_seed=config.data.seed,
            hooks=method.hooks(wrapped, strategy))
        result = trainer.fit()
    return method, {"steps": result.step, **result.eval_metrics}


def load_teacher(path: str, source: TrainedModel):
    """inputs -> logits of the teacher, its variables created in the current strategy scope."""
    if path and is_saved_model(path):
        return saved_model_teacher(path)
    trained = restore_run(path) if path else source
    model = models.build_model(trained.config.model, trained.source.spec)
    model.set_weights(float32_model(trained).get_weights())
    return lambda inputs: model(inputs, training=False)


def save_weights(source: TrainedModel, out_dir: str) -> str:
    """The trained weights as the output run's checkpoint (post-training methods)."""
    step = tf.Variable(source.step, dtype=tf.int64)
    checkpointer = Checkpointer(RunDir(out_dir).checkpoints, keep=1,
                                model=float32_model(source), step=step)
    return checkpointer.save(source.step)


def method_details(method: Method) -> dict:
    """What the method chose, layer by layer, for the report."""
    fields = ("pruned", "left_dense", "schedule", "quantized", "left_float", "clustered",
              "left_unclustered")
    details = {}
    for name in fields:
        value = getattr(method, name, None)
        if value is not None:
            details[name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return details


def measure(source: TrainedModel, compressed: TrainedModel, out_dir: str,
            details: dict) -> CompressResult:
    """Save both models as deployable artifacts, measure them, write the report."""
    c = compressed.config.compress
    spec = source.source.spec
    artifacts = RunDir(out_dir).artifacts
    os.makedirs(artifacts, exist_ok=True)
    options = {"eval_steps": c.eval_steps, "latency_runs": c.latency_runs}
    before_path = reports.save_saved_model(
        float32_model(source), spec, os.path.join(artifacts, "before_saved_model"))
    before = reports.measure_saved_model(before_path, source.source, **options)
    if c.method == "qat":
        # The QAT model's own ranges, no calibration: see `convert_int8`.
        after_path = convert_int8(compressed.model, spec, os.path.join(artifacts, "model_qat.tflite"))
        after = reports.measure_tflite(after_path, source.source, **options)
    elif c.method in PTQ_VARIANTS:
        variant = PTQ_VARIANTS[c.method]
        after_path = os.path.join(artifacts, tflite_file(variant))
        model = compressed.model
        convert_tflite(predict_function(model, spec), model, variant, after_path,
                       calibration=calibration_examples(source, c.calibration_examples))
        after = reports.measure_tflite(after_path, source.source, **options)
    else:
        after_path = reports.save_saved_model(
            compressed.model, spec, os.path.join(artifacts, "after_saved_model"))
        after = reports.measure_saved_model(after_path, source.source, **options)
    files = reports.write_report(out_dir, method=c.method, before=before, after=after,
                                 details=details)
    return CompressResult(output_dir=out_dir, method=c.method, before=before, after=after,
                          files={**files, "artifact": after_path})
