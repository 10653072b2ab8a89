"""Data sets and pipelines: contents, splits, bad input, sharding, exact resume."""

import numpy as np
import pytest
import tensorflow as tf

from tfbig.config import DataConfig
from tfbig.data import (DataError, DataSpec, distribute, from_arrays, load_data,
                        write_tfrecords)
from tfbig.data.text import default_corpus
from tfbig.distribute import split_cpu


def batches(dataset, count):
    return [tuple(t.numpy() for t in batch) for batch in dataset.take(count)]


def test_text_windows_are_the_corpus_with_shifted_targets():
    source = load_data(DataConfig(name="text", seq_len=16, eval_fraction=0.1))
    corpus = default_corpus()
    assert source.spec == DataSpec("lm", (16,), "int32", 256)
    inputs, targets = batches(source.train.make_dataset(
        batch_size=4, shuffle=False, seed=0, repeat=False), 1)[0]
    assert bytes(inputs[0].astype(np.uint8)) == corpus[:16]
    assert bytes(inputs[1].astype(np.uint8)) == corpus[16:32]
    np.testing.assert_array_equal(targets[:, :-1], inputs[:, 1:])
    assert targets[0, -1] == corpus[16]
    # Eval is the tail of the corpus, disjoint from the train windows.
    eval_inputs, _ = batches(source.eval.make_dataset(
        batch_size=1, shuffle=False, seed=0, repeat=False), 1)[0]
    eval_start = len(corpus) - int(len(corpus) * 0.1)
    assert bytes(eval_inputs[0].astype(np.uint8)) == corpus[eval_start:eval_start + 16]
    assert source.train.num_examples * 16 < eval_start + 16


def test_user_text_files_and_their_errors(tmp_path):
    path = tmp_path / "story.txt"
    path.write_text("once upon a time " * 20)
    source = load_data(DataConfig(name="text", paths=[str(path)], seq_len=8, eval_fraction=0.2))
    assert source.train.num_examples == (272 - 1) // 8
    with pytest.raises(DataError, match="text file .*missing.txt' does not exist"):
        load_data(DataConfig(name="text", paths=[str(tmp_path / "missing.txt")]))
    with pytest.raises(DataError, match="too few for one window of data.seq_len \\+ 1 = 129"):
        load_data(DataConfig(name="text", paths=[str(path)], seq_len=128, eval_fraction=0.2))


def test_digits_are_scaled_labelled_and_split_deterministically():
    source = load_data(DataConfig(name="digits", eval_fraction=0.2))
    assert source.spec == DataSpec("classification", (8, 8), "float32", 10)
    assert (source.train.num_examples, source.eval.num_examples) == (1438, 359)
    x, y = batches(source.train.make_dataset(batch_size=1438, shuffle=False, seed=0,
                                             repeat=False), 1)[0]
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert sorted(set(y.tolist())) == list(range(10))
    again = load_data(DataConfig(name="digits", eval_fraction=0.2))
    x2, _ = batches(again.train.make_dataset(batch_size=8, shuffle=False, seed=0,
                                             repeat=False), 1)[0]
    np.testing.assert_array_equal(x[:8], x2)


def test_npz_round_trip_and_bad_files(tmp_path):
    x = np.arange(40 * 3, dtype=np.float64).reshape(40, 3)
    y = np.arange(40) % 4
    good = tmp_path / "good.npz"
    np.savez(good, x=x, y=y, x_eval=x[:5], y_eval=y[:5])
    source = load_data(DataConfig(name="npz", paths=[str(good)]))
    assert source.spec == DataSpec("classification", (3,), "float32", 4)
    got_x, got_y = batches(source.train.make_dataset(batch_size=40, shuffle=False, seed=0,
                                                     repeat=False), 1)[0]
    np.testing.assert_array_equal(got_x, x.astype(np.float32))
    np.testing.assert_array_equal(got_y, y)

    def fails(message, **arrays):
        path = tmp_path / "bad.npz"
        np.savez(path, **arrays)
        with pytest.raises(DataError, match=message):
            load_data(DataConfig(name="npz", paths=[str(path)]))

    fails(r"array 'y' is missing; the file holds \['x'\]", x=x)
    fails("x has 40 examples but y has 39", x=x, y=y[:39])
    fails("y must be a 1-D array of integer class labels", x=x, y=y.astype(np.float32))
    fails("give both x_eval and y_eval", x=x, y=y, x_eval=x)
    with pytest.raises(DataError, match="npz file .*nope.npz' does not exist"):
        load_data(DataConfig(name="npz", paths=[str(tmp_path / "nope.npz")]))


def test_resume_by_skipping_reproduces_the_stream_across_epochs():
    source = from_arrays(np.arange(30, dtype=np.float32)[:, None], np.arange(30) % 3,
                         DataConfig(name="npz", eval_fraction=0.1))
    n = source.train.num_examples  # 27: three epochs of 9 batches of 3

    def stream(skip):
        return [x[:, 0].tolist() for x, _ in batches(source.train.make_dataset(
            batch_size=3, shuffle=True, seed=7, repeat=True, skip_examples=skip * 3), 20 - skip)]

    full = stream(0)
    assert stream(0) == full                 # deterministic given the seed
    assert stream(11) == full[11:]           # skip crosses an epoch boundary
    first_epoch = sorted(v for batch in full[:9] for v in batch)
    assert len(set(first_epoch)) == n        # each example once per epoch
    assert full[:9] != full[9:18]            # and a new order each epoch


def test_tfrecord_round_trip_atomic_and_sharded_by_file(tmp_path):
    spec = DataSpec("classification", (2, 3), "float32", 5)
    x = np.random.default_rng(0).normal(size=(50, 2, 3)).astype(np.float32)
    y = np.arange(50) % 5
    write_tfrecords(str(tmp_path), "train", x, y, spec, num_shards=4)
    write_tfrecords(str(tmp_path), "eval", x[:10], y[:10], spec, num_shards=1)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]
    source = load_data(DataConfig(name="tfrecord", paths=[str(tmp_path)]))
    assert source.spec == spec and source.train.num_examples == 50
    got_x, got_y = batches(source.train.make_dataset(batch_size=50, shuffle=False, seed=0,
                                                     repeat=False, drop_remainder=False), 1)[0]
    order = np.argsort(got_x[:, 0, 0])
    np.testing.assert_array_equal(got_x[order], x[np.argsort(x[:, 0, 0])])
    assert sorted(got_y.tolist()) == sorted(y.tolist())

    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                             num_replicas_in_sync=2)
        part = source.train.make_dataset(batch_size=1, shuffle=True, seed=1, repeat=False,
                                         drop_remainder=False, input_context=context)
        seen.append({float(v) for v, _ in ((b[0][0, 0, 0], b[1]) for b in batches(part, 50))})
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == 50

    with pytest.raises(DataError, match="has no spec.json"):
        load_data(DataConfig(name="tfrecord", paths=[str(tmp_path / "empty")]))


def test_distribute_gives_each_replica_half_the_global_batch():
    strategy = tf.distribute.MirroredStrategy(split_cpu(2))
    source = load_data(DataConfig(name="digits"))
    dataset = distribute(strategy, source.train, global_batch_size=8, shuffle=False, seed=0,
                         repeat=True)
    inputs, targets = next(iter(dataset))
    local = strategy.experimental_local_results(inputs)
    assert [t.shape[0] for t in local] == [4, 4]
    whole, _ = batches(source.train.make_dataset(batch_size=8, shuffle=False, seed=0,
                                                 repeat=True), 1)[0]
    np.testing.assert_array_equal(np.concatenate([t.numpy() for t in local]), whole)
    with pytest.raises(ValueError, match="batch size 7 cannot be split evenly over 2 replicas"):
        distribute(strategy, source.train, global_batch_size=7, shuffle=False, seed=0,
                   repeat=True)


def test_workers_slice_the_same_global_steps_as_one_process():
    # 4 replicas: in one process (1 input pipeline) or on 2 workers of 2
    # replicas each. Every step must train on the same 8 examples either way,
    # also when resuming at step 3.
    source = load_data(DataConfig(name="digits"))

    def per_replica_batches(pipelines, pipeline, skip_steps, count):
        context = tf.distribute.InputContext(num_input_pipelines=pipelines,
                                             input_pipeline_id=pipeline, num_replicas_in_sync=4)
        local_replicas = 4 // pipelines
        dataset = source.train.make_dataset(
            batch_size=2, shuffle=True, seed=3, repeat=True, input_context=context,
            skip_examples=skip_steps * 2 * local_replicas)
        return [x for x, _ in batches(dataset, count)]

    for skip in (0, 3):
        one = per_replica_batches(1, 0, skip, 4 * 5)
        workers = [per_replica_batches(2, p, skip, 2 * 5) for p in range(2)]
        for step in range(5):
            single = np.concatenate(one[4 * step:4 * step + 4])
            spread = np.concatenate([w[2 * step + r] for w in workers for r in range(2)])
            np.testing.assert_array_equal(spread, single)
