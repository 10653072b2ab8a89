"""Language-model windows from a prepared token directory (`tfbig data prepare`).

A prepared directory holds the tokenizer, `spec.json` and each split as shard
files of raw little-endian token ids. Training reads them with TensorFlow ops
only (read_file, decode_raw, stateless shuffles), so the same pipeline runs
in-process, on the workers of a cluster and on tf.data service workers, which
cannot run Python. Memory is a few shards, whatever the corpus' size.

The stream is a pure function of (seed, position), as for the in-memory data
sets: in epoch `e` an input pipeline visits its shards in an order shuffled by
(seed, e), and each shard's windows in an order shuffled by (seed, e, shard).
A window is `seq_len + 1` tokens at a stride of `seq_len` inside one shard
(every token but a shard's first is a target once per epoch). Resuming at
example `n` is arithmetic over the shards' window counts: whole epochs and
whole shards are skipped without being read. Each input pipeline of a cluster
(`InputContext`) reads its own shards, `shards[id::pipelines]`.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from tfbig.config import DataConfig
from tfbig.data.source import DataError, DataSource
from tfbig.data.spec import DataSpec

SPEC_FILE = "spec.json"
FORMAT = "tfbig-tokens/1"
_DTYPES = {"uint16": tf.uint16, "uint32": tf.uint32}
_EPOCH_SEED_STRIDE = 1 << 20  # (epoch, shard) -> one seed, for up to a million shards


def read_spec(directory: str) -> dict:
    """spec.json of a prepared directory, checked enough to read the shards it lists."""
    path = os.path.join(directory, SPEC_FILE)
    if not os.path.isfile(path):
        raise DataError(f"data.paths: {directory!r} is not a prepared token directory (no {SPEC_FILE}); "
                        f"make one with `tfbig data prepare PATH... --output {directory}`")
    with open(path) as f:
        try:
            spec = json.load(f)
        except json.JSONDecodeError as error:
            raise DataError(f"{path} is not valid JSON ({error}); prepare the directory again") from None
    if spec.get("format") != FORMAT:
        raise DataError(f"{path} has format {spec.get('format')!r}; this tfbig reads {FORMAT!r}")
    if spec.get("dtype") not in _DTYPES:
        raise DataError(f"{path}: token dtype {spec.get('dtype')!r} is not one of {sorted(_DTYPES)}")
    return spec


def dataset_directory(cfg: DataConfig) -> str:
    if cfg.prepare is not None and not cfg.paths:
        raise DataError("data.paths: empty, so the dataset is the one the pipeline prepares from data.prepare "
                        "into RUN/dataset; run `tfbig pipeline CONFIG --until train` to prepare it and train")
    if len(cfg.paths) != 1:
        raise DataError(f"data.paths: data.name 'tokens' takes one prepared directory, got {len(cfg.paths)} "
                        f"paths; prepare several corpora into one directory with `tfbig data prepare`")
    return cfg.paths[0]


class ShardSplit:
    """One split's shards, read as windows of `seq_len + 1` tokens."""

    def __init__(self, directory: str, spec: dict, split: str, seq_len: int):
        shards = spec["splits"][split]["shards"]
        self.paths = [os.path.join(directory, shard["file"]) for shard in shards]
        self.window_counts = [max(0, (shard["tokens"] - 1) // seq_len) for shard in shards]
        self.num_examples = sum(self.window_counts)
        if self.num_examples < 1:
            raise DataError(f"the {split} split of {directory} has {spec['splits'][split]['tokens']} tokens "
                            f"in {len(shards)} shard(s), too few for one window of data.seq_len + 1 = "
                            f"{seq_len + 1} tokens in a shard; lower data.seq_len or prepare more text")
        self.seq_len = seq_len
        self._dtype = _DTYPES[spec["dtype"]]

    def _pipeline_shards(self, input_context) -> tf.Tensor | None:
        """This input pipeline's shard indices, `shards[id::pipelines]`, or None when
        there are fewer shards than pipelines (a small eval split has one).

        The pipeline id may be a tensor (a parameter-server worker learns its
        index only when it runs the traced dataset function), so the shards are
        picked by TensorFlow ops; only their number must be known here.
        """
        if input_context is None or input_context.num_input_pipelines == 1:
            return tf.range(len(self.paths), dtype=tf.int64)
        pipelines = input_context.num_input_pipelines
        if len(self.paths) < pipelines:
            return None
        index = tf.cast(input_context.input_pipeline_id, tf.int64)
        return tf.range(index, len(self.paths), pipelines, dtype=tf.int64)

    def _windows(self, shard, epoch, start, seed, shuffle: bool) -> tf.data.Dataset:
        """The windows of one shard from position `start` of its (shuffled) order."""
        paths = tf.constant(self.paths)
        counts = tf.constant(self.window_counts, tf.int64)
        tokens = tf.io.decode_raw(tf.io.read_file(paths[shard]), self._dtype, little_endian=True)
        tokens = tf.cast(tokens, tf.int32)
        order = tf.range(counts[shard])
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(
                order, seed=tf.stack([seed, epoch * _EPOCH_SEED_STRIDE + shard]))
        offsets = order[start:][:, None] * self.seq_len + tf.range(self.seq_len + 1, dtype=tf.int64)[None, :]
        return tf.data.Dataset.from_tensor_slices(tf.gather(tokens, offsets))

    @staticmethod
    def _shard_order(shards, epoch, seed, shuffle: bool):
        if shuffle:
            return tf.random.experimental.stateless_shuffle(shards, seed=tf.stack([seed, epoch]))
        return shards

    def _visits(self, shards, skip, seed, shuffle: bool, repeat: bool) -> tf.data.Dataset:
        """(epoch, shard, first window) of each shard visit, from the one holding window `skip`.

        Visit `v` is position `v % S` of epoch `v // S`'s shard order (S shards
        in this pipeline), so the source is a plain `range` of visit numbers:
        resuming starts it at the right visit, and a tf.data service can hand
        visits out one at a time (dynamic sharding splits a `range`).
        """
        counts = tf.constant(self.window_counts, tf.int64)
        per_epoch_visits = tf.size(shards, out_type=tf.int64)
        per_epoch = tf.reduce_sum(tf.gather(counts, shards))
        epoch, left = skip // per_epoch, skip % per_epoch
        ends = tf.cumsum(tf.gather(counts, self._shard_order(shards, epoch, seed, shuffle)))
        position = tf.reduce_sum(tf.cast(ends <= left, tf.int64))  # the visit window `left` is in
        start = left - tf.concat([[0], ends], 0)[position]
        first = epoch * per_epoch_visits + position
        last = tf.int64.max if repeat else (epoch + 1) * per_epoch_visits

        def visit(number):
            epoch = number // per_epoch_visits
            shard = self._shard_order(shards, epoch, seed, shuffle)[number % per_epoch_visits]
            return epoch, shard, tf.where(number == first, start, 0)

        return tf.data.Dataset.range(first, last).map(visit)

    def make_dataset(self, *, batch_size, shuffle, seed, repeat, skip_examples=0, drop_remainder=True,
                     input_context=None) -> tf.data.Dataset:
        shards = self._pipeline_shards(input_context)
        seed = tf.constant(seed, tf.int64)
        if shards is None:
            # Too few shards for one each: every pipeline reads the whole stream and keeps
            # its windows id, id + P, ... Its example n is window n * P + id of the stream,
            # so resuming at n skips n * P windows.
            pipelines = input_context.num_input_pipelines
            visits = self._visits(tf.range(len(self.paths), dtype=tf.int64),
                                  tf.constant(skip_examples * pipelines, tf.int64), seed, shuffle, repeat)
        else:
            visits = self._visits(shards, tf.constant(skip_examples, tf.int64), seed, shuffle, repeat)
        windows = visits.flat_map(lambda epoch, shard, start: self._windows(shard, epoch, start, seed, shuffle))
        if shards is None:
            windows = windows.shard(pipelines, tf.cast(input_context.input_pipeline_id, tf.int64))
        batches = windows.batch(batch_size, drop_remainder=drop_remainder)
        return batches.map(lambda w: (w[:, :-1], w[:, 1:]), num_parallel_calls=tf.data.AUTOTUNE,
                           deterministic=True).prefetch(tf.data.AUTOTUNE)


def load_tokens(cfg: DataConfig) -> DataSource:
    """A prepared directory's train and eval splits; the vocabulary is its tokenizer's."""
    directory = dataset_directory(cfg)
    spec = read_spec(directory)
    eval_split = spec["splits"]["eval"]
    return DataSource(
        spec=DataSpec("lm", (cfg.seq_len,), "int32", spec["tokenizer"]["vocab_size"]),
        train=ShardSplit(directory, spec, "train", cfg.seq_len),
        eval=ShardSplit(directory, spec, "eval", cfg.seq_len),
        tokens_per_byte=eval_split["tokens"] / max(1, eval_split["bytes"]),
    )
