"""What every data set gives the Trainer: a spec and two splits.

A `Split` knows how many examples it has and builds a `tf.data.Dataset` of
(inputs, targets) batches for one input pipeline. In-memory splits draw
examples by index, so the stream is a pure function of (seed, position) and a
resumed run reproduces it by skipping, with no iterator state to save.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

import numpy as np

import tensorflow as tf

from tfbig.data.errors import DataError  # noqa: F401  (re-exported: tfbig.data.source.DataError)
from tfbig.data.pipeline import index_pipeline
from tfbig.data.spec import DataSpec


class Split(Protocol):
    num_examples: int

    def make_dataset(self, *, batch_size: int, shuffle: bool, seed: int, repeat: bool,
                     skip_examples: int = 0, drop_remainder: bool = True,
                     input_context: tf.distribute.InputContext | None = None,
                     ) -> tf.data.Dataset: ...


@dataclasses.dataclass(frozen=True)
class DataSource:
    spec: DataSpec
    train: Split
    eval: Split
    # Language models: tokens per byte of the eval split's text, which turns a loss per
    # token into bits per byte, comparable between tokenizers. None for other tasks.
    tokens_per_byte: float | None = None


class IndexedSplit:
    """A split whose example `i` can be fetched directly: `gather(indices)`."""

    def __init__(self, num_examples: int, gather: Callable[[tf.Tensor], tuple]):
        self.num_examples = num_examples
        self._gather = gather

    def make_dataset(self, *, batch_size, shuffle, seed, repeat, skip_examples=0,
                     drop_remainder=True, input_context=None):
        return index_pipeline(
            self.num_examples, self._gather, batch_size=batch_size, shuffle=shuffle,
            seed=seed, repeat=repeat, skip_examples=skip_examples,
            drop_remainder=drop_remainder, input_context=input_context,
        )


def array_split(inputs: np.ndarray, targets: np.ndarray) -> IndexedSplit:
    """A split over in-memory arrays with one example per row."""
    x = tf.constant(inputs)
    y = tf.constant(targets)
    return IndexedSplit(len(inputs), lambda idx: (tf.gather(x, idx), tf.gather(y, idx)))
