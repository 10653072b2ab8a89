"""Sharded TFRecord files: the format for data sets too big for memory.

Layout of a directory written by `write_tfrecords`:
`{split}-{i:05d}-of-{n:05d}.tfrecord` shards of `tf.train.Example`s holding
`inputs` and `targets` as raw little-endian bytes, plus `spec.json` with the
DataSpec and each split's example count. Every file is written under a temp
name and renamed, so a reader never sees a half-written shard.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import tempfile

import numpy as np

import tensorflow as tf

from tfbig.config import DataConfig
from tfbig.data.pipeline import shard
from tfbig.data.source import DataError, DataSource
from tfbig.data.spec import DataSpec

SPEC_FILE = "spec.json"
# Records can't be fetched by index, so shuffling needs a buffer of examples.
SHUFFLE_BUFFER = 10_000


def write_tfrecords(directory: str, split_name: str, inputs: np.ndarray, targets: np.ndarray,
                    spec: DataSpec, num_shards: int) -> list[str]:
    """Write one split as `num_shards` files; returns their paths."""
    if len(inputs) != len(targets):
        raise DataError(f"inputs has {len(inputs)} examples but targets has {len(targets)}")
    if num_shards < 1:
        raise DataError(f"num_shards must be >= 1, got {num_shards}")
    os.makedirs(directory, exist_ok=True)
    inputs = np.asarray(inputs, dtype=spec.input_dtype)
    targets = np.asarray(targets, dtype=np.int32)
    paths = []
    for i, rows in enumerate(np.array_split(np.arange(len(inputs)), num_shards)):
        path = os.path.join(directory, f"{split_name}-{i:05d}-of-{num_shards:05d}.tfrecord")
        tmp = path + ".tmp"
        with tf.io.TFRecordWriter(tmp) as writer:
            for row in rows:
                writer.write(_example(inputs[row], targets[row]))
        os.replace(tmp, path)
        paths.append(path)
    _update_spec_file(directory, spec, split_name, len(inputs))
    return paths


def _example(inputs: np.ndarray, targets: np.ndarray) -> bytes:
    def raw(array):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[array.tobytes()]))

    features = tf.train.Features(feature={"inputs": raw(inputs), "targets": raw(targets)})
    return tf.train.Example(features=features).SerializeToString()


def _update_spec_file(directory: str, spec: DataSpec, split_name: str, count: int) -> None:
    path = os.path.join(directory, SPEC_FILE)
    meta = {"spec": dataclasses.asdict(spec), "counts": {}}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            meta["counts"] = json.load(f)["counts"]
    meta["counts"][split_name] = count
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".spec-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, path)


def load_tfrecords(cfg: DataConfig) -> DataSource:
    if len(cfg.paths) != 1:
        raise DataError(f"data.paths: tfrecord data needs one directory, got {cfg.paths!r}")
    directory = cfg.paths[0]
    spec_path = os.path.join(directory, SPEC_FILE)
    if not os.path.isfile(spec_path):
        raise DataError(f"data.paths: {directory!r} has no {SPEC_FILE}; write it with "
                        f"tfbig.data.write_tfrecords")
    with open(spec_path, encoding="utf-8") as f:
        meta = json.load(f)
    raw_spec = meta["spec"]
    spec = DataSpec(raw_spec["task"], tuple(raw_spec["input_shape"]),
                    raw_spec["input_dtype"], raw_spec["num_classes"])
    splits = {}
    for name in ("train", "eval"):
        files = sorted(glob.glob(os.path.join(directory, f"{name}-*.tfrecord")))
        if not files or name not in meta["counts"]:
            raise DataError(f"data.paths: {directory!r} holds no {name!r} split")
        splits[name] = RecordSplit(files, meta["counts"][name], spec)
    return DataSource(spec, splits["train"], splits["eval"])


class RecordSplit:
    """A split read from TFRecord shards, sharded by file when there are enough."""

    def __init__(self, files: list[str], num_examples: int, spec: DataSpec):
        self.files = files
        self.num_examples = num_examples
        self._spec = spec

    def make_dataset(self, *, batch_size, shuffle, seed, repeat, skip_examples=0,
                     drop_remainder=True, input_context=None):
        """Resume is exact too: `skip` replays the same seeded order, reading
        through the skipped records (cost grows with the position)."""
        files = tf.data.Dataset.from_tensor_slices(self.files)
        by_file = input_context is not None and len(self.files) >= input_context.num_input_pipelines
        if by_file:
            files = shard(files, input_context)
        records = files.interleave(tf.data.TFRecordDataset, cycle_length=4,
                                   num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if not by_file:
            records = shard(records, input_context)
        if shuffle:
            records = records.shuffle(min(self.num_examples, SHUFFLE_BUFFER), seed=seed,
                                      reshuffle_each_iteration=True)
        if repeat:
            records = records.repeat()
        if skip_examples:
            records = records.skip(skip_examples)
        batches = records.batch(batch_size, drop_remainder=drop_remainder)
        return batches.map(self._parse, num_parallel_calls=tf.data.AUTOTUNE,
                           deterministic=True).prefetch(tf.data.AUTOTUNE)

    def _parse(self, serialized):
        features = tf.io.parse_example(serialized, {
            "inputs": tf.io.FixedLenFeature([], tf.string),
            "targets": tf.io.FixedLenFeature([], tf.string),
        })
        batch = tf.shape(serialized)[:1]
        inputs = tf.io.decode_raw(features["inputs"], tf.as_dtype(self._spec.input_dtype))
        targets = tf.io.decode_raw(features["targets"], tf.int32)
        target_shape = self._spec.input_shape if self._spec.task == "lm" else ()
        return (tf.reshape(inputs, tf.concat([batch, self._spec.input_shape], 0)),
                tf.reshape(targets, tf.concat([batch, tf.constant(target_shape, tf.int32)], 0)))
