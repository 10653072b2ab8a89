"""Optimizers and learning-rate schedules built from the `train:` config.

The schedule is a Keras `LearningRateSchedule` driven by `optimizer.iterations`,
so it is saved with the optimizer and a resumed run continues on the same curve.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

from tfbig.config import OptimizerConfig, ScheduleConfig, TrainConfig

# Variable-name patterns exempt from decoupled weight decay: decaying norm
# scales/offsets and biases towards zero only hurts (AdamW paper, GPT-2/BERT).
NO_DECAY_PATTERNS = ("bias", "gamma", "beta", "layer_norm", "batch_norm")


@keras.saving.register_keras_serializable(package="tfbig")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak`, then constant, cosine, linear or step decay.

    Cosine and linear decay run over `decay_steps` after warmup and end at
    `peak * min_ratio`; `step` multiplies by `factor` at each boundary.
    """

    def __init__(self, peak, *, kind="constant", warmup_steps=0, decay_steps=1,
                 min_ratio=0.0, boundaries=(), factor=0.1):
        super().__init__()
        self.peak = float(peak)
        self.kind = kind
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = max(int(decay_steps), 1)
        self.min_ratio = float(min_ratio)
        self.boundaries = [int(b) for b in boundaries]
        self.factor = float(factor)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = tf.cast(self.warmup_steps, tf.float32)
        # (step + 1) so the first update already has a non-zero learning rate.
        warm = self.peak * tf.minimum(1.0, (step + 1.0) / tf.maximum(warmup, 1.0))
        progress = tf.clip_by_value((step - warmup) / self.decay_steps, 0.0, 1.0)
        floor = self.peak * self.min_ratio
        if self.kind == "cosine":
            decayed = floor + (self.peak - floor) * 0.5 * (1.0 + tf.cos(math.pi * progress))
        elif self.kind == "linear":
            decayed = self.peak - (self.peak - floor) * progress
        elif self.kind == "step":
            boundaries = tf.constant(self.boundaries, tf.float32, shape=[len(self.boundaries)])
            passed = tf.reduce_sum(tf.cast(step >= boundaries, tf.float32))
            decayed = self.peak * tf.pow(self.factor, passed)
        else:
            decayed = tf.constant(self.peak)
        return tf.where(step < warmup, warm, decayed)

    def get_config(self):
        return {
            "peak": self.peak, "kind": self.kind, "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps, "min_ratio": self.min_ratio,
            "boundaries": self.boundaries, "factor": self.factor,
        }


def make_schedule(cfg: ScheduleConfig, peak: float, total_steps: int) -> WarmupDecay:
    decay_steps = cfg.decay_steps or max(total_steps - cfg.warmup_steps, 1)
    return WarmupDecay(
        peak, kind=cfg.name, warmup_steps=cfg.warmup_steps, decay_steps=decay_steps,
        min_ratio=cfg.min_ratio, boundaries=cfg.step_boundaries, factor=cfg.step_factor,
    )


def make_optimizer(train: TrainConfig) -> keras.optimizers.Optimizer:
    """The configured optimizer, wrapped for dynamic loss scaling under float16.

    Build it inside `strategy.scope()` so its slot variables are mirrored.
    """
    cfg: OptimizerConfig = train.optimizer
    lr = make_schedule(train.schedule, cfg.learning_rate, train.steps)
    if cfg.name == "sgd":
        optimizer = keras.optimizers.SGD(lr, momentum=cfg.momentum)
    elif cfg.name == "adam":
        optimizer = keras.optimizers.Adam(
            lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, epsilon=cfg.epsilon
        )
    elif cfg.name == "adamw":
        optimizer = keras.optimizers.AdamW(
            lr, weight_decay=cfg.weight_decay, beta_1=cfg.beta_1,
            beta_2=cfg.beta_2, epsilon=cfg.epsilon,
        )
        optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_PATTERNS))
    elif cfg.name == "adafactor":
        optimizer = keras.optimizers.Adafactor(lr)
    else:
        raise ValueError(f"train.optimizer.name: unknown optimizer {cfg.name!r}")
    if train.precision == "mixed_float16":
        # float16 gradients underflow without scaling; the dynamic scale halves
        # on overflow (skipping that step) and doubles after 2000 good steps.
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer


def current_learning_rate(optimizer) -> float:
    """The learning rate the next update will use, as a Python float."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    lr = inner.learning_rate
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        return float(lr(inner.iterations))
    return float(tf.convert_to_tensor(lr))
