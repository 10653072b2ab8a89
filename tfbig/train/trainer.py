"""The custom training loop, Orbit-style.

Inner loop: `train_steps(iterator, num_steps)` is one `tf.function` that runs
`num_steps` optimizer steps through `strategy.run` inside a `tf.range` loop.
`num_steps` is a tensor, so chunks of any length reuse one trace, and Python
is touched once per chunk rather than once per step.

Outer loop: `fit()` in Python picks chunk lengths so that chunks end exactly
on log, eval and checkpoint boundaries, then does those actions between
chunks. Everything the outer loop needs to resume is in the checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time

import tensorflow as tf
import tf_keras as keras

from tfbig import data as tfdata
from tfbig.config import ConfigError, TrainConfig
from tfbig.data.service import DataService
from tfbig.errors import RunError
from tfbig.rundir import RunDir
from tfbig.train import losses
from tfbig.train.checkpoint import Checkpointer, dropout_generators
from tfbig.train.execution import CoordinatedExecution, make_execution
from tfbig.train.hooks import TrainingHooks
from tfbig.train.logging import RunLog
from tfbig.train.optim import current_learning_rate
from tfbig.train.preemption import preemption_saver


class TrainingDivergedError(RunError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is untouched."""


@dataclasses.dataclass(frozen=True)
class TrainResult:
    step: int
    train_metrics: dict
    eval_metrics: dict
    stopped_early: bool
    checkpoint: str | None


class Trainer:
    """Trains `model` on a `DataSource` under `strategy`, writing into `run_dir`.

    Build `model` and `optimizer` inside `strategy.scope()` before passing them.
    `hooks` lets compression act inside the loop (see `tfbig.train.hooks`).
    With `data_service`, training batches come from that tf.data service;
    evaluation always reads in this process.
    """

    def __init__(self, *, model: keras.Model, optimizer, strategy: tf.distribute.Strategy,
                 source: tfdata.DataSource, config: TrainConfig, run_dir: str,
                 data_seed: int = 0, hooks: TrainingHooks | None = None,
                 data_service: DataService | None = None):
        self.model = model
        self.data_service = data_service
        self.hooks = hooks or TrainingHooks()
        self.optimizer = optimizer
        self.strategy = strategy
        self.source = source
        self.config = config
        self.run_dir = run_dir
        self.data_seed = data_seed
        self._task = source.spec.task
        # Tokens per example: what throughput is counted in for language models.
        self._tokens_per_example = source.spec.input_shape[0] if self._task == "lm" else 1
        self._check_batch_split()
        self.execution = make_execution(strategy, steps_per_execution=config.steps_per_execution)
        self._compute_gradients = tf.function(
            self._accumulated_gradients, jit_compile=config.jit_compile
        )
        with strategy.scope():
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            # Early-stopping state lives in the checkpoint so it survives resume.
            self.best_metric = tf.Variable(math.nan, dtype=tf.float64, trainable=False)
            self.evals_without_improvement = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.train_loss = keras.metrics.Mean("loss")
            self.train_accuracy = keras.metrics.Mean("accuracy")
            self.eval_loss = keras.metrics.Mean("eval_loss")
            self.eval_accuracy = keras.metrics.Mean("eval_accuracy")
            # Create optimizer slots now so a restore fills them immediately.
            optimizer.build(model.trainable_variables)
        # Only the chief writes the run directory; other workers of a cluster
        # write checkpoints and logs to scratch space removed after `fit`.
        self.is_chief = strategy.extended.should_checkpoint
        self._write_dir = run_dir if self.is_chief else tempfile.mkdtemp(prefix="tfbig-worker-")
        self.checkpointer = Checkpointer(
            RunDir(run_dir).checkpoints, keep=config.keep_checkpoints,
            write_directory=RunDir(self._write_dir).checkpoints,
            model=model, optimizer=optimizer, step=self.step,
            best_metric=self.best_metric,
            evals_without_improvement=self.evals_without_improvement,
            dropout_rng=dropout_generators(model),
        )

    def _check_batch_split(self) -> None:
        replicas = self.strategy.num_replicas_in_sync
        parts = replicas * self.config.grad_accum_steps
        if self.config.batch_size % parts:
            raise ConfigError(
                f"train.batch_size: {self.config.batch_size} cannot be split into "
                f"{replicas} replica(s) x {self.config.grad_accum_steps} accumulation "
                f"micro-batch(es); use a multiple of {parts}"
            )

    # ------------------------------------------------------------ inner loop

    def _loss_and_gradients(self, inputs, targets):
        """Loss sum, accuracy sum and gradients of one (micro-)batch on one replica."""
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.model(inputs, training=True)
            per_example = self.hooks.per_example_loss(inputs, targets, logits)
            if per_example is None:
                per_example = losses.per_example_loss(self._task, targets, logits)
            # Divide by the global batch: the all-reduce then sums to the mean.
            loss = tf.reduce_sum(per_example) / self.config.batch_size
            if self.model.losses:
                loss += tf.add_n(self.model.losses) / self.strategy.num_replicas_in_sync
            if isinstance(self.optimizer, keras.mixed_precision.LossScaleOptimizer):
                loss = self.optimizer.get_scaled_loss(loss)
        gradients = tape.gradient(loss, variables)
        accuracy = losses.per_example_accuracy(self._task, targets, logits)
        return tf.reduce_sum(per_example), tf.reduce_sum(accuracy), gradients

    def _accumulated_gradients(self, inputs, targets):
        """Gradients summed over `grad_accum_steps` equal micro-batches."""
        k = self.config.grad_accum_steps
        if k == 1:
            return self._loss_and_gradients(inputs, targets)
        micro_inputs = _split_batch(inputs, k)
        micro_targets = _split_batch(targets, k)
        loss_sum = tf.constant(0.0)
        accuracy_sum = tf.constant(0.0)
        gradients = [tf.zeros_like(v) for v in self.model.trainable_variables]
        for i in tf.range(k):
            loss, accuracy, micro = self._loss_and_gradients(micro_inputs[i], micro_targets[i])
            loss_sum += loss
            accuracy_sum += accuracy
            gradients = [g + tf.convert_to_tensor(m) for g, m in zip(gradients, micro)]
        return loss_sum, accuracy_sum, gradients

    def _train_step(self, batch):
        inputs, targets = batch
        loss_sum, accuracy_sum, gradients = self._compute_gradients(inputs, targets)
        if isinstance(self.optimizer, keras.mixed_precision.LossScaleOptimizer):
            gradients = self.optimizer.get_unscaled_gradients(gradients)
        # Reduce first, then clip: clipping must see the global gradient norm.
        context = tf.distribute.get_replica_context()
        gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
        if self.config.optimizer.clip_norm > 0:
            gradients, _ = tf.clip_by_global_norm(gradients, self.config.optimizer.clip_norm)
        self.optimizer.apply_gradients(
            zip(gradients, self.model.trainable_variables), skip_gradients_aggregation=True
        )
        count = tf.cast(tf.shape(targets)[0], tf.float32)
        self.train_loss.update_state(loss_sum / count, sample_weight=count)
        self.train_accuracy.update_state(accuracy_sum / count, sample_weight=count)

    @tf.function
    def train_steps(self, iterator, num_steps):
        """Run `num_steps` (a tensor) optimizer steps on batches from `iterator`."""
        for _ in tf.range(num_steps):
            self.hooks.before_step(self.step.read_value())
            self.strategy.run(self._train_step, args=(next(iterator),))
            # Counted inside the loop so the step variable is right whenever
            # a checkpoint is taken, including one forced by a preemption.
            self.step.assign_add(1)

    def train_iterator(self, *, skip_steps: int = 0):
        """An iterator over distributed training batches, after `skip_steps` steps."""
        return self.execution.train_iterator(
            self.source.train, global_batch_size=self.config.batch_size, seed=self.data_seed,
            skip_steps=skip_steps,
            service=self.data_service and self.data_service.starting_at(skip_steps),
        )

    def _eval_step(self, batch):
        inputs, targets = batch
        logits = self.model(inputs, training=False)
        self.eval_loss.update_state(losses.per_example_loss(self._task, targets, logits))
        self.eval_accuracy.update_state(losses.per_example_accuracy(self._task, targets, logits))

    @tf.function
    def _eval_loop(self, iterator, max_steps):
        for _ in tf.range(max_steps):
            batch = iterator.get_next_as_optional()
            if not batch.has_value():
                break
            self.execution.run_replicas(self._eval_step, batch.get_value())

    # ------------------------------------------------------------ outer loop

    def evaluate(self) -> dict:
        """Loss, accuracy (and perplexity and bits per byte for LMs) over the eval split."""
        self.eval_loss.reset_state()
        self.eval_accuracy.reset_state()
        iterator = self.execution.eval_iterator(
            self.source.eval, global_batch_size=self._eval_batch_size(), seed=self.data_seed,
        )
        max_steps = self.config.eval_steps or tf.int64.max
        self._eval_loop(iterator, tf.constant(max_steps, tf.int64))
        metrics = {
            "eval_loss": float(self.eval_loss.result()),
            "eval_accuracy": float(self.eval_accuracy.result()),
        }
        if self._task == "lm":
            metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 700.0))
        if self.source.tokens_per_byte is not None:  # nats per token -> bits per byte of text
            metrics["eval_bits_per_byte"] = metrics["eval_loss"] / math.log(2) * self.source.tokens_per_byte
        return metrics

    def _eval_batch_size(self) -> int:
        # Eval holds no activations for backprop, so it can take the full
        # step's batch even when training accumulates micro-batches.
        return self.config.batch_size

    def fit(self) -> TrainResult:
        """Train to `config.steps`, resuming from the latest checkpoint if any."""
        cfg = self.config
        restored = self.checkpointer.restore_latest()
        start = int(self.step.numpy())
        preemption = preemption_saver(self.strategy, self.checkpointer.save)
        log = RunLog(
            self._write_dir, total_steps=cfg.steps, start_step=start,
            progress_bar=cfg.progress_bar and self.is_chief,
            unit="tok/s" if self._task == "lm" else "ex/s",
        )
        eval_metrics: dict = {}
        train_metrics: dict = {}
        stopped_early = False
        checkpoint = restored
        try:
            iterator = self.train_iterator(skip_steps=start)
            step = start
            window_start, window_steps = time.perf_counter(), 0
            while step < cfg.steps and not stopped_early:
                chunk = self._next_boundary(step) - step
                chunk_start = time.perf_counter()
                self.execution.run_steps(self.train_steps, iterator, chunk)
                loss = float(self.train_loss.result())
                if not math.isfinite(loss):
                    raise TrainingDivergedError(
                        f"training loss became {loss} between steps {step} and "
                        f"{step + chunk}; stopped without saving. The last good "
                        f"checkpoint is {self.checkpointer.latest or '(none yet)'}. "
                        f"Lower train.optimizer.learning_rate, keep "
                        f"train.optimizer.clip_norm > 0, or add warmup steps."
                    )
                step += chunk
                # A parameter-server chunk re-run after a worker failure counts
                # its steps twice in the variable; the scheduled count is right.
                self.step.assign(step)
                window_steps += chunk
                throughput = (chunk * cfg.batch_size * self._tokens_per_example
                              / (time.perf_counter() - chunk_start))
                log.advance(chunk, loss=loss, throughput=throughput)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    train_metrics = self._collect_train_metrics(
                        window_steps, time.perf_counter() - window_start
                    )
                    log.write(step, train_metrics, kind="train")
                    window_start, window_steps = time.perf_counter(), 0
                if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
                    eval_metrics = self.evaluate()
                    log.write(step, eval_metrics, kind="eval")
                    stopped_early = self._should_stop(eval_metrics)
                if step % cfg.checkpoint_every == 0 or step == cfg.steps or stopped_early:
                    checkpoint = self.checkpointer.save(step)
                if preemption:  # last: the step's records are written before a forced exit
                    preemption.after_steps(step)
        finally:
            log.close()
            if preemption:
                preemption.close()
            if not self.is_chief:
                shutil.rmtree(self._write_dir, ignore_errors=True)
        return TrainResult(
            step=int(self.step.numpy()), train_metrics=train_metrics,
            eval_metrics=eval_metrics, stopped_early=stopped_early, checkpoint=checkpoint,
        )

    def _next_boundary(self, step: int) -> int:
        cfg = self.config
        every = [cfg.log_every, cfg.checkpoint_every]
        # A coordinator splits its chunk into steps_per_execution pieces that
        # workers run at the same time, so only the actions bound it.
        if not isinstance(self.execution, CoordinatedExecution):
            every.append(cfg.steps_per_execution)
        if cfg.eval_every:
            every.append(cfg.eval_every)
        return min([cfg.steps] + [(step // n + 1) * n for n in every])

    def _collect_train_metrics(self, steps: int, seconds: float) -> dict:
        examples_per_s = steps * self.config.batch_size / max(seconds, 1e-9)
        metrics = {
            "loss": float(self.train_loss.result()),
            "accuracy": float(self.train_accuracy.result()),
            "learning_rate": current_learning_rate(self.optimizer),
            "examples_per_s": examples_per_s,
            **self.hooks.log_metrics(),
        }
        if self._task == "lm":
            metrics["tokens_per_s"] = examples_per_s * self._tokens_per_example
        self.train_loss.reset_state()
        self.train_accuracy.reset_state()
        return metrics

    def _should_stop(self, eval_metrics: dict) -> bool:
        rule = self.config.early_stopping
        if not rule.metric:
            return False
        if rule.metric not in eval_metrics:
            raise ConfigError(
                f"train.early_stopping.metric: {rule.metric!r} is not computed for this "
                f"task; available: {', '.join(eval_metrics)}"
            )
        value = eval_metrics[rule.metric]
        best = float(self.best_metric.numpy())
        sign = 1.0 if rule.mode == "min" else -1.0
        if math.isnan(best) or sign * (best - value) > rule.min_delta:
            self.best_metric.assign(value)
            self.evals_without_improvement.assign(0)
            return False
        self.evals_without_improvement.assign_add(1)
        return int(self.evals_without_improvement.numpy()) >= rule.patience


def _split_batch(tensor: tf.Tensor, parts: int) -> tf.Tensor:
    """[parts * b, ...] -> [parts, b, ...]: micro-batches for accumulation."""
    shape = tf.shape(tensor)
    return tf.reshape(tensor, tf.concat([[parts, shape[0] // parts], shape[1:]], axis=0))
