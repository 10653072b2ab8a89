"""Classification arrays: scikit-learn's bundled digits and user `.npz` files."""

from __future__ import annotations

import os

import numpy as np

from tfbig.config import DataConfig
from tfbig.data.source import DataError, DataSource, array_split
from tfbig.data.spec import DataSpec


def load_digits(cfg: DataConfig) -> DataSource:
    """The 1,797 8x8 handwritten digits that ship inside scikit-learn (no download)."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    # Pixel values are 0..16; scale to [0, 1].
    inputs = (digits.images / 16.0).astype(np.float32)
    return from_arrays(inputs, digits.target.astype(np.int32), cfg)


def load_npz(cfg: DataConfig) -> DataSource:
    """A user's `x`, `y` (and optional `x_eval`, `y_eval`) arrays."""
    if len(cfg.paths) != 1:
        raise DataError(f"data.paths: npz data needs exactly one .npz file, got {cfg.paths!r}")
    path = cfg.paths[0]
    if not os.path.isfile(path):
        raise DataError(f"data.paths: npz file {path!r} does not exist")
    with np.load(path) as arrays:
        present = sorted(arrays.files)
        for key in ("x", "y"):
            if key not in arrays:
                raise DataError(f"{path}: array {key!r} is missing; the file holds {present}")
        loaded = {key: arrays[key] for key in present}
    if ("x_eval" in loaded) != ("y_eval" in loaded):
        raise DataError(f"{path}: give both x_eval and y_eval, or neither; the file holds {present}")
    if "x_eval" in loaded:
        return from_arrays(loaded["x"], loaded["y"], cfg,
                           eval_arrays=(loaded["x_eval"], loaded["y_eval"]), origin=path)
    return from_arrays(loaded["x"], loaded["y"], cfg, origin=path)


def from_arrays(inputs, targets, cfg: DataConfig, *, eval_arrays=None,
                origin: str = "data") -> DataSource:
    """Validate arrays and split them; without eval arrays, hold out a seeded share."""
    inputs, targets = _checked(inputs, targets, origin, "x", "y")
    if eval_arrays is None:
        order = np.random.default_rng(cfg.seed).permutation(len(inputs))
        held_out = int(len(inputs) * cfg.eval_fraction)
        train_idx, eval_idx = order[: len(inputs) - held_out], order[len(inputs) - held_out:]
        eval_inputs, eval_targets = inputs[eval_idx], targets[eval_idx]
        inputs, targets = inputs[train_idx], targets[train_idx]
    else:
        eval_inputs, eval_targets = _checked(*eval_arrays, origin, "x_eval", "y_eval")
        if eval_inputs.shape[1:] != inputs.shape[1:]:
            raise DataError(f"{origin}: x_eval examples have shape {eval_inputs.shape[1:]}, "
                            f"x examples {inputs.shape[1:]}; they must match")
    if len(inputs) == 0 or len(eval_inputs) == 0:
        raise DataError(f"{origin}: {len(inputs)} train and {len(eval_inputs)} eval examples; "
                        f"both splits need at least one (check data.eval_fraction)")
    spec = DataSpec(
        task="classification", input_shape=tuple(int(d) for d in inputs.shape[1:]),
        input_dtype="int32" if inputs.dtype == np.int32 else "float32",
        num_classes=int(max(targets.max(), eval_targets.max())) + 1,
    )
    return DataSource(spec, array_split(inputs, targets), array_split(eval_inputs, eval_targets))


def _checked(inputs, targets, origin, x_name, y_name):
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    if len(inputs) != len(targets):
        raise DataError(f"{origin}: {x_name} has {len(inputs)} examples but {y_name} has "
                        f"{len(targets)}; they must be the same length")
    if targets.ndim != 1 or not np.issubdtype(targets.dtype, np.integer):
        raise DataError(f"{origin}: {y_name} must be a 1-D array of integer class labels, "
                        f"got dtype {targets.dtype} and shape {targets.shape}")
    if targets.size and targets.min() < 0:
        raise DataError(f"{origin}: {y_name} has negative labels; classes must be 0..n-1")
    # Integer inputs are token ids; anything else is treated as real-valued features.
    dtype = np.int32 if np.issubdtype(inputs.dtype, np.integer) else np.float32
    return inputs.astype(dtype), targets.astype(np.int32)
