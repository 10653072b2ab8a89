"""`tfbig train` as a function: config in, trained run directory out.

Makes the run directory (`tfbig.rundir`): the resolved config, checkpoints,
TensorBoard logs and the metrics records. Training into a directory that
already holds a run resumes it; the model and data must be the same (a changed
`train.steps` is how a run is extended), otherwise we refuse rather than mix
two runs.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import tensorflow as tf
import tf_keras as keras
import yaml

from tfbig import data as tfdata
from tfbig import models
from tfbig.config import Config, ConfigError, DistributeConfig, config_to_dict, save_config
from tfbig.train.data_service import training_data_service
from tfbig.distribute import make_strategy
from tfbig.distribute.dtensor_strategy import MeshStrategy
from tfbig.distribute.mesh import MODEL
from tfbig.distribute.parameter_server import SERVING_TASKS, serve_cluster_task
from tfbig.distribute.strategy import cluster_from_env
from tfbig.models import precision_policy
from tfbig.models.gpt_layout import gpt_layout_scope
from tfbig.rundir import RunDir
from tfbig.train.logging import RunLog
from tfbig.train.optim import make_optimizer
from tfbig.train.trainer import Trainer, TrainResult

# Sections that define what is being trained; a resumed run must not change them.
FIXED_SECTIONS = ("model", "data")


def train(config: Config) -> TrainResult:
    """Train `config` into `config.output.dir`, resuming a run already there."""
    run_dir = config.output.dir
    check_resumable(config, run_dir)
    if config.distribute.strategy == "parameter_server":
        resolver = cluster_from_env("parameter_server")
        if resolver.task_type in SERVING_TASKS:
            serve_cluster_task(resolver)  # until the launcher stops this task
        if resolver.task_type == "evaluator":
            return evaluate_checkpoints(config)
    data_service = training_data_service(config)
    # The strategy first: on CPU it may still have to split the device, which
    # TensorFlow allows only before the runtime starts.
    strategy = make_strategy(config.distribute)
    if strategy.extended.should_checkpoint:  # the chief of a cluster, or a lone process
        os.makedirs(run_dir, exist_ok=True)
        save_config(config, RunDir(run_dir).config)
    with precision_policy(config.train.precision):
        return build_trainer(config, strategy, data_service=data_service).fit()


def build_trainer(config: Config, strategy: tf.distribute.Strategy, **options) -> Trainer:
    """The model, optimizer and data of `config` in a Trainer under `strategy`.

    Call within `precision_policy(config.train.precision)`.
    """
    keras.utils.set_random_seed(config.train.seed)
    source = tfdata.load_data(config.data)
    with strategy.scope():
        with model_scope(strategy, config.model):  # shards the weights under dtensor
            model = models.build_model(config.model, source.spec)
        optimizer = make_optimizer(config.train)
    return Trainer(
        model=model, optimizer=optimizer, strategy=strategy, source=source,
        config=config.train, run_dir=config.output.dir, data_seed=config.data.seed, **options,
    )


def model_scope(strategy: tf.distribute.Strategy, model_cfg):
    """Where to build the model for `strategy`: sharded under dtensor, as is otherwise.

    The config allows dtensor only for a GPT without recompute (`Config.check`)."""
    if not isinstance(strategy, MeshStrategy):
        return contextlib.nullcontext()
    return gpt_layout_scope(strategy.mesh, model_cfg, axis=MODEL)


def evaluate_checkpoints(config: Config) -> TrainResult:
    """The evaluator task: evaluate each checkpoint the chief writes, up to the last.

    Evaluating on a parameter-server coordinator would pause training, so, as
    with Keras' SidecarEvaluator, a separate task watches the checkpoints. Its
    metrics go to RUN_DIR/evaluator/ (metrics.jsonl and TensorBoard).
    """
    with precision_policy(config.train.precision):
        trainer = build_trainer(config, make_strategy(DistributeConfig()))
        log = RunLog(RunDir(config.output.dir).evaluator, total_steps=config.train.steps,
                     start_step=0, progress_bar=False, unit="ex/s")
        step, metrics = 0, {}
        try:
            for path in tf.train.checkpoints_iterator(trainer.checkpointer.directory):
                try:
                    trainer.checkpointer.restore(path)
                except (tf.errors.OpError, IndexError) as error:  # deleted meanwhile
                    warnings.warn(f"evaluator skipped {path}: {type(error).__name__}")
                    continue
                step, metrics = int(trainer.step.numpy()), trainer.evaluate()
                log.write(step, metrics, kind="eval")
                if step >= config.train.steps:
                    break
        finally:
            log.close()
    return TrainResult(step=step, train_metrics={}, eval_metrics=metrics,
                       stopped_early=False, checkpoint=path)


def check_resumable(config: Config, run_dir: str) -> None:
    """Refuse to continue the run in `run_dir` with another model or data."""
    path = RunDir(run_dir).config
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        previous = yaml.safe_load(f) or {}
    current = config_to_dict(config)
    for section in FIXED_SECTIONS:
        if _saved_section(previous, section, current) != current[section]:
            raise ConfigError(
                f"{section}: differs from the run already in {run_dir!r}, which cannot "
                f"be resumed with another {section}. Choose a new --output-dir, or "
                f"train {path} unchanged to resume it."
            )


def _saved_section(previous: dict, section: str, current: dict):
    """A saved config section as the current config would write it.

    `model.vocab_size: 0` means the data's vocabulary, which the (unchanged)
    data section fixes; runs saved before 0 became the default wrote the
    number out, and are still the same model.
    """
    saved = previous.get(section)
    if (section == "model" and isinstance(saved, dict) and saved.get("vocab_size")
            and current["model"].get("vocab_size") == 0):
        return {**saved, "vocab_size": 0}
    return saved
