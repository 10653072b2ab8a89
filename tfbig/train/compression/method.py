"""What every compression method is to the rest of tfbig.

A method turns the trained float model into the model that is fine-tuned
(`wrap`, e.g. TF-MOT's pruning wrappers), may act inside the Trainer's loop
(`hooks`), and turns the fine-tuned model into the one that is exported
(`finalize`, e.g. `strip_pruning`). A compressed run directory is an
ordinary run directory whose config names the method, so `tfbig export`
rebuilds `wrap(build_model(...))`, restores the checkpoint into it and
exports `finalize(...)` of it: see `tfbig.export.restore`.
"""

from __future__ import annotations

import re

import tensorflow as tf
import tf_keras as keras

from tfbig.config import ConfigError
from tfbig.train.hooks import TrainingHooks


class Method:
    """The identity method; subclasses override what they change."""

    # Whether the method fine-tunes (or trains) a model; PTQ does not.
    trains = True

    def wrap(self, model: keras.Model) -> keras.Model:
        """The model to fine-tune, starting from `model`'s weights (shared or copied).

        Called inside `strategy.scope()`; deterministic, because a compressed
        run is restored by wrapping a freshly built model again.
        """
        return model

    def hooks(self, model: keras.Model, strategy: tf.distribute.Strategy) -> TrainingHooks | None:
        """Hooks for the Trainer fine-tuning `model` (the result of `wrap`) under `strategy`."""
        return None

    def finalize(self, model: keras.Model) -> keras.Model:
        """The model to export, from the fine-tuned (wrapped) `model`."""
        return model


class PostTraining(Method):
    """Leaves the model as trained: post-training quantization happens at conversion."""

    trains = False


def layer_selector(pattern: str, key: str):
    """A predicate on layer names for the regex `pattern` (empty = every layer)."""
    if not pattern:
        return lambda name: True
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"{key}: {pattern!r} is not a valid regular expression: {e}") from None
    return lambda name: compiled.search(name) is not None


def require_selected(model: keras.Model, selected: list[str], *, key: str, what: str) -> None:
    """Refuse a layer selection that matches nothing, naming the layers there are."""
    if not selected:
        names = ", ".join(layer.name for layer in model.layers if layer.weights)
        raise ConfigError(f"{key}: no layer of model {model.name!r} can be {what} with this "
                          f"selection; layers with weights: {names}")


def wrap_selected(model: keras.Model, *, pattern: str, key: str, what: str, keep_reason,
                  wrap_layer) -> tuple[keras.Model, list[str], dict[str, str]]:
    """`model` with `wrap_layer(layer)` in place of each selected layer with weights.

    A layer is kept as it is when `keep_reason(layer)` names a reason, or when
    its name does not match the regex `pattern` (config key `key`). Returns
    the new model (sharing `model`'s weights: kept layers are reused, wrappers
    hold the original layers), the wrapped layer names and the kept ones with
    their reasons, so a report can say what was left out and why.
    """
    selected = layer_selector(pattern, key)
    wrapped_names: list[str] = []
    kept: dict[str, str] = {}

    def clone(layer):
        if not layer.weights:
            return layer
        reason = keep_reason(layer)
        if reason is None and not selected(layer.name):
            reason = f"not matched by {key}"
        if reason:
            kept[layer.name] = reason
            return layer
        wrapped_names.append(layer.name)
        return wrap_layer(layer)

    wrapped = keras.models.clone_model(model, clone_function=clone)
    require_selected(model, wrapped_names, key=key, what=what)
    return wrapped, wrapped_names, kept
