"""What a data set hands to the model builder: the shape of one example."""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Per-example description of a data set, without the batch dimension.

    `lm`: inputs are int32 token ids of shape (seq_len,), targets the same ids
    shifted by one; `num_classes` is the vocabulary size.
    `classification`: inputs of `input_shape`/`input_dtype`, an int32 scalar
    label in [0, num_classes).
    """

    task: Literal["lm", "classification"]
    input_shape: tuple[int, ...]
    input_dtype: Literal["int32", "float32"]
    num_classes: int
