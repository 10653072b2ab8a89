"""Magnitude pruning inside tfbig's own loop (TF-MOT `tfmot.sparsity.keras`).

Which layers are pruned, by rule:
- Dense, Conv and MultiHeadAttention kernels (TF-MOT's PruneRegistry names
  them), if their name matches `compress.prune.layers`;
- never embeddings (token or position), norms, biases or the tied output
  head: they are a small share of the weights and carry most of the accuracy;
  TF-MOT would prune an Embedding, tfbig deliberately leaves it dense;
- with 2:4 structure, only layers whose kernels are 2-D or 4-D: TF-MOT's
  m-by-n masks reject MultiHeadAttention's 3-D kernels, so attention stays
  dense there.
Every layer left dense is reported with its reason, never a crash.

`model.fit` drives pruning with the `UpdatePruningStep` callback, and TF-MOT's
wrapper updates masks from inside its own `call` through `merge_call`. Neither
works in tfbig's loop: many steps run in one `tf.function`, and under
MirroredStrategy the forward pass sits in a nested `tf.function` (the gradient
function) inside a `tf.range` loop, where `merge_call` raises. So tfbig's
`LoopPruneLowMagnitude` wrapper only computes, and `PruningHooks.before_step`
does the rest once per step in cross-replica context, in TF-MOT's order: set
the step, update the masks if the schedule says so, mask the weights. Its
`log_metrics` plays the part of `PruningSummaries`.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

from tfbig.train.compression.method import Method, wrap_selected
from tfbig.config import ConfigError, PruneConfig
from tfbig.train.hooks import TrainingHooks


# Layers left dense by rule, whatever the selection says.
DENSE_BY_RULE = (keras.layers.Embedding,)
# Default share of fine-tuning spent ramping sparsity up; the rest recovers.
DEFAULT_END_FRACTION = 0.7
# Default number of mask updates over the ramp.
DEFAULT_UPDATES = 16


@dataclasses.dataclass(frozen=True)
class Schedule:
    begin_step: int
    end_step: int
    frequency: int


def resolve_schedule(cfg: PruneConfig, steps: int) -> Schedule:
    """Begin/end/frequency in fine-tuning steps, checked so the target is really reached.

    TF-MOT updates masks only at `begin + k * frequency` up to `end`; if `end`
    is not on that grid (or `frequency` exceeds the ramp), the last update
    happens short of the target and the model is silently less sparse.
    """
    end = cfg.end_step or max(cfg.begin_step + 1, int(steps * DEFAULT_END_FRACTION))
    if not cfg.begin_step < end <= steps:
        raise ConfigError(
            f"compress.prune: the pruning ramp begin_step={cfg.begin_step} .. end_step={end} "
            f"must lie within the {steps} fine-tuning steps (compress.steps) and be non-empty")
    ramp = end - cfg.begin_step
    if cfg.frequency:
        frequency = cfg.frequency
        if ramp % frequency:
            raise ConfigError(
                f"compress.prune.frequency: {frequency} does not divide the ramp of {ramp} steps "
                f"(begin_step={cfg.begin_step}, end_step={end}); TF-MOT would stop short of "
                f"target_sparsity. Choose a divisor of {ramp}, or 0 for automatic")
    else:
        frequency = max(1, ramp // DEFAULT_UPDATES)
        end = cfg.begin_step + (ramp // frequency) * frequency
    return Schedule(cfg.begin_step, end, frequency)


def pruning_schedule(cfg: PruneConfig, schedule: Schedule):
    if cfg.schedule == "constant":
        return tfmot.sparsity.keras.ConstantSparsity(
            cfg.target_sparsity, begin_step=schedule.begin_step, end_step=schedule.end_step,
            frequency=schedule.frequency)
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=cfg.initial_sparsity, final_sparsity=cfg.target_sparsity,
        begin_step=schedule.begin_step, end_step=schedule.end_step,
        frequency=schedule.frequency)


class PruneMethod(Method):
    def __init__(self, cfg: PruneConfig, *, steps: int):
        self.cfg = cfg
        self.schedule = resolve_schedule(cfg, steps)
        self.pruned: list[str] = []
        self.left_dense: dict[str, str] = {}

    def dense_reason(self, layer: keras.layers.Layer) -> str | None:
        """Why `layer` stays dense, or None if it is pruned."""
        if isinstance(layer, DENSE_BY_RULE):
            return "embedding: dense by rule"
        if isinstance(layer, tfmot.sparsity.keras.PrunableLayer):
            weights = layer.get_prunable_weights()
        elif PruneRegistry.supports(layer):
            if not layer.built:
                return "not built"
            weights = PruneRegistry.make_prunable(layer).get_prunable_weights()
        else:
            return f"{type(layer).__name__}: no prunable weights known to TF-MOT"
        if not weights:
            return "no prunable weights"
        if self.cfg.structure == "2:4":
            ranks = {len(w.shape) for w in weights}
            if not ranks <= {2, 4}:
                return f"2:4 needs 2-D or 4-D kernels, this layer has rank {sorted(ranks)}"
        return None

    def wrap(self, model: keras.Model) -> keras.Model:
        schedule = pruning_schedule(self.cfg, self.schedule)
        m_by_n = (2, 4) if self.cfg.structure == "2:4" else None
        wrapped, self.pruned, self.left_dense = wrap_selected(
            model, pattern=self.cfg.layers, key="compress.prune.layers", what="pruned",
            keep_reason=self.dense_reason,
            wrap_layer=lambda layer: LoopPruneLowMagnitude(
                layer, pruning_schedule=schedule, sparsity_m_by_n=m_by_n))
        return wrapped

    def hooks(self, model: keras.Model, strategy: tf.distribute.Strategy) -> TrainingHooks:
        return PruningHooks(model, strategy)

    def finalize(self, model: keras.Model) -> keras.Model:
        """Apply the final masks, then drop the wrappers (`strip_pruning`).

        The last optimizer step moved some masked weights off zero; the
        wrapper re-masks only on its next call, so mask explicitly here
        (what `UpdatePruningStep.on_epoch_end` does under `model.fit`).
        """
        with model.distribute_strategy.scope():  # cross-replica, as in `before_step`
            for layer in pruning_wrappers(model):
                layer.pruning_obj.weight_mask_op()
        return tfmot.sparsity.keras.strip_pruning(model)


def pruning_wrappers(model: keras.Model) -> list:
    return [layer for layer in model.layers if isinstance(layer, PruneLowMagnitude)]


@keras.saving.register_keras_serializable(package="tfbig")
class LoopPruneLowMagnitude(PruneLowMagnitude):
    """TF-MOT's pruning wrapper minus its in-call updates, which `PruningHooks` makes."""

    def call(self, inputs, training=None, **kwargs):
        if "training" in inspect.getfullargspec(self.layer.call).args:
            kwargs["training"] = training
        return self.layer.call(inputs, **kwargs)


class PruningHooks(TrainingHooks):
    """UpdatePruningStep + the wrapper's mask updates + PruningSummaries, per step."""

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy):
        self.wrappers = pruning_wrappers(model)
        self.strategy = strategy

    def before_step(self, step):
        # In the strategy's scope, outside `strategy.run`: cross-replica
        # context, where TF-MOT assigns masks and weights on every replica.
        with self.strategy.scope():
            for layer in self.wrappers:
                # TF-MOT's wrapper counts steps from 1 (it increments before updating).
                layer.pruning_step.assign(step + 1)
                layer.pruning_obj.conditional_mask_update()
                layer.pruning_obj.weight_mask_op()

    def log_metrics(self) -> dict[str, float]:
        masks = [mask.numpy() for layer in self.wrappers for _, mask, _ in layer.pruning_vars]
        return {"pruned_sparsity": sparsity(masks)}


def sparsity(values: list[tf.Variable | np.ndarray]) -> float:
    """Fraction of exact zeros over all elements of `values`."""
    arrays = [np.asarray(v) for v in values]
    total = sum(a.size for a in arrays)
    return sum(int(np.sum(a == 0)) for a in arrays) / max(total, 1)
