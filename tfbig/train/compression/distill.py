"""Knowledge distillation (Hinton et al. 2015) in tfbig's Trainer, under any strategy.

The student trains on the teacher's data with

    loss = alpha * CE(labels, student)
         + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))

per example (per token, averaged over the window, for language models). T^2
keeps the soft term's gradients on the same scale as the hard term's as T
grows. The teacher runs in inference mode, with no gradient, inside the
same replica step as the student, so its logits never leave the device.

The teacher is the run being compressed, another run directory, or an
exported SavedModel (any SavedModel whose `serving_default` maps `inputs`
to `logits`, tfbig's or not).
"""

from __future__ import annotations

import os

import tensorflow as tf

from tfbig import saved_model
from tfbig.train.compression.method import Method
from tfbig.config import ConfigError, DistillConfig
from tfbig.protocol import DEFAULT_SIGNATURE, LOGITS
from tfbig.train import losses
from tfbig.train.hooks import TrainingHooks


def soft_target_loss(teacher_logits, student_logits, temperature: float, task: str):
    """T^2 * KL(teacher/T || student/T) per example."""
    t = tf.nn.log_softmax(tf.cast(teacher_logits, tf.float32) / temperature, axis=-1)
    s = tf.nn.log_softmax(tf.cast(student_logits, tf.float32) / temperature, axis=-1)
    kl = tf.reduce_sum(tf.exp(t) * (t - s), axis=-1)
    if task == "lm":
        kl = tf.reduce_mean(kl, axis=-1)
    return temperature ** 2 * kl


class DistillationHooks(TrainingHooks):
    def __init__(self, teacher, cfg: DistillConfig, task: str):
        self.teacher = teacher
        self.cfg = cfg
        self.task = task

    def per_example_loss(self, inputs, targets, logits):
        teacher_logits = tf.stop_gradient(self.teacher(inputs))
        hard = losses.per_example_loss(self.task, targets, logits)
        soft = soft_target_loss(teacher_logits, logits, self.cfg.temperature, self.task)
        return self.cfg.alpha * hard + (1.0 - self.cfg.alpha) * soft


class DistillMethod(Method):
    """The student is an ordinary model; only the loss changes while it trains."""

    def __init__(self, cfg: DistillConfig, *, task: str, teacher=None):
        self.cfg = cfg
        self.task = task
        self.teacher = teacher

    def hooks(self, model, strategy):
        if self.teacher is None:
            raise ValueError("DistillMethod needs a teacher to train")  # a tfbig bug, not a user's
        return DistillationHooks(self.teacher, self.cfg, self.task)


def is_saved_model(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def saved_model_teacher(path: str):
    """`inputs -> logits` of a SavedModel's serving_default signature."""
    loaded = saved_model.load(path)
    signature = loaded.signatures.get(DEFAULT_SIGNATURE)
    if signature is None or LOGITS not in signature.structured_outputs:
        raise ConfigError(f"compress.distill.teacher: {path!r} has no {DEFAULT_SIGNATURE} signature "
                          f"returning `{LOGITS}`")
    input_name = next(iter(signature.structured_input_signature[1]))

    def teacher(inputs):
        return signature(**{input_name: inputs})[LOGITS]

    teacher.keep_alive = loaded  # the signature needs the loaded object's variables
    return teacher
