"""Byte-level language-model windows from text.

Bytes are the tokens (vocabulary 256): no tokenizer to train, ship or keep
in sync with the exported model, and every UTF-8 text is covered. The default
corpus is the English text of CPython's `pydoc_data` topics, which ships with
every Python, so training needs no download.
"""

from __future__ import annotations

import os

import numpy as np

import tensorflow as tf

from tfbig.config import DataConfig
from tfbig.data.source import DataError, DataSource, IndexedSplit
from tfbig.data.spec import DataSpec

VOCAB_SIZE = 256


def default_corpus() -> bytes:
    """CPython's pydoc topics, joined in sorted-key order for a stable byte stream."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics)).encode("utf-8")


def read_corpus(paths: list[str]) -> bytes:
    if not paths:
        return default_corpus()
    chunks = []
    for path in paths:
        if not os.path.isfile(path):
            raise DataError(f"data.paths: text file {path!r} does not exist")
        with open(path, "rb") as f:
            chunks.append(f.read())
    return b"\n\n".join(chunks)


def load_text(cfg: DataConfig) -> DataSource:
    """Train on the head of the corpus, evaluate on its last `eval_fraction`."""
    corpus = read_corpus(cfg.paths)
    eval_bytes = int(len(corpus) * cfg.eval_fraction)
    train_part, eval_part = corpus[: len(corpus) - eval_bytes], corpus[len(corpus) - eval_bytes:]
    return DataSource(
        spec=DataSpec("lm", (cfg.seq_len,), "int32", VOCAB_SIZE),
        train=window_split(train_part, cfg.seq_len, "train"),
        eval=window_split(eval_part, cfg.seq_len, "eval"),
        tokens_per_byte=1.0,  # every byte is a token
    )


def window_split(data: bytes, seq_len: int, name: str) -> IndexedSplit:
    """Windows of seq_len + 1 bytes, stride seq_len: inputs w[:-1], targets w[1:].

    The stride makes every byte a target exactly once per epoch; windows are
    gathered from the one byte tensor rather than stored, so memory stays at
    one byte per token.
    """
    count = (len(data) - 1) // seq_len
    if count < 1:
        raise DataError(
            f"the {name} split has {len(data)} bytes, too few for one window of "
            f"data.seq_len + 1 = {seq_len + 1} bytes; provide more text, lower "
            f"data.seq_len or change data.eval_fraction"
        )
    tokens = tf.constant(np.frombuffer(data, dtype=np.uint8))
    offsets = tf.range(seq_len + 1, dtype=tf.int64)

    def gather(indices):
        windows = tf.gather(tokens, indices[:, None] * seq_len + offsets[None, :])
        windows = tf.cast(windows, tf.int32)
        return windows[:, :-1], windows[:, 1:]

    return IndexedSplit(count, gather)
