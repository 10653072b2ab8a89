"""The `tokens` data source: prepared shards read as LM windows by TensorFlow ops.

The directories here are written by hand in the prepared format (byte tokens
of real text: the pydoc topics), so these tests check the reader alone; the
preparation step has its own tests.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from tfbig.config import config_from_dict
from tfbig.data import DataError, load_data
from tfbig.data.tokens import ShardSplit
from tfbig.train import read_metrics, train

from corpus import shard_windows, write_prepared
from runs import GPT, make_config

SEQ = 16


def source(directory, seq_len=SEQ):
    return load_data(config_from_dict({"data": {"name": "tokens", "paths": [str(directory)],
                                                "seq_len": seq_len}}).data)


def windows(split, *, count, skip=0, seed=3, shuffle=True, context=None):
    dataset = split.make_dataset(batch_size=1, shuffle=shuffle, seed=seed, repeat=True,
                                 skip_examples=skip, input_context=context)
    return [np.concatenate([x[0], y[0, -1:]]) for x, y in dataset.take(count).as_numpy_iterator()]


@pytest.mark.slow
def test_an_epoch_visits_every_window_once_in_a_seeded_order(tmp_path):
    spec = write_prepared(tmp_path)
    split = source(tmp_path).train
    epoch = windows(split, count=split.num_examples)
    every_window = shard_windows(tmp_path, spec["splits"]["train"]["shards"], SEQ)
    assert sorted(w.tobytes() for w in epoch) == sorted(every_window)  # each window once
    assert [w.tobytes() for w in epoch] != every_window  # in a shuffled order
    assert [w.tobytes() for w in windows(split, count=50)] == [w.tobytes() for w in epoch[:50]]
    other_seed = windows(split, count=50, seed=4)
    assert [w.tobytes() for w in other_seed] != [w.tobytes() for w in epoch[:50]]
    next_epoch = windows(split, count=2 * split.num_examples)[split.num_examples:]
    assert sorted(w.tobytes() for w in next_epoch) == sorted(w.tobytes() for w in epoch)
    assert [w.tobytes() for w in next_epoch] != [w.tobytes() for w in epoch]


@pytest.mark.slow
@pytest.mark.parametrize("skip", [1, 37, "one epoch and a bit"])
def test_the_stream_is_a_function_of_position(tmp_path, skip):
    write_prepared(tmp_path)
    split = source(tmp_path).train
    skip = split.num_examples + 5 if isinstance(skip, str) else skip
    straight = windows(split, count=skip + 40)
    resumed = windows(split, count=40, skip=skip)
    assert [w.tobytes() for w in resumed] == [w.tobytes() for w in straight[skip:]]


@pytest.mark.slow
def test_input_pipelines_read_disjoint_shards(tmp_path):
    spec = write_prepared(tmp_path, (("train", 4), ("eval", 1)))
    split = source(tmp_path).train
    # A parameter-server worker's index is a tensor, known only when its graph runs.
    for index in (0, tf.constant(1, tf.int64)):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=index)
        per_epoch = sum(split.window_counts[int(index)::2])
        read = windows(split, count=per_epoch, context=context)
        assert sorted(w.tobytes() for w in read) == sorted(
            shard_windows(tmp_path, spec["splits"]["train"]["shards"][int(index)::2], SEQ))


def test_pipelines_share_a_split_with_fewer_shards_window_by_window(tmp_path):
    """A one-shard eval split read by 2 workers: each keeps every other window, and resumes exactly."""
    write_prepared(tmp_path, (("train", 1), ("eval", 1)))
    split = source(tmp_path).eval
    whole = windows(split, count=2 * (split.num_examples // 2))
    contexts = [tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i) for i in range(2)]
    halves = [windows(split, count=split.num_examples // 2, context=c) for c in contexts]
    for index, half in enumerate(halves):
        assert [w.tobytes() for w in half] == [w.tobytes() for w in whole[index::2]]
    resumed = windows(split, count=3, skip=5, context=contexts[1])
    assert [w.tobytes() for w in resumed] == [w.tobytes() for w in halves[1][5:8]]


def test_eval_reads_the_eval_split_in_order_once(tmp_path):
    spec = write_prepared(tmp_path)
    split = source(tmp_path).eval
    batches = list(split.make_dataset(batch_size=4, shuffle=False, seed=0, repeat=False,
                                      drop_remainder=False).as_numpy_iterator())
    assert sum(len(x) for x, _ in batches) == split.num_examples
    tokens = np.fromfile(tmp_path / spec["splits"]["eval"]["shards"][0]["file"], "<u2")
    np.testing.assert_array_equal(batches[0][0][0], tokens[:SEQ])
    np.testing.assert_array_equal(batches[0][1][0], tokens[1:SEQ + 1])


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "is not a prepared token directory"),
    (lambda d: (d / "spec.json").write_text("{"), "is not valid JSON"),
    (lambda d: (d / "spec.json").write_text('{"format": "other"}'), "has format 'other'"),
])
def test_a_directory_that_is_not_prepared_is_a_clear_error(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(DataError, match=message):
        source(tmp_path)


def test_too_short_shards_are_a_clear_error(tmp_path):
    spec = write_prepared(tmp_path)
    with pytest.raises(DataError, match="too few for one window"):
        ShardSplit(str(tmp_path), spec, "eval", 100_000)


def tokens_config(run_dir, data_dir, **train):
    return make_config(run_dir, model={**GPT, "vocab_size": 257, "max_len": SEQ},
                       data={"name": "tokens", "paths": [str(data_dir)], "seq_len": SEQ}, **train)


@pytest.mark.slow
def test_training_on_prepared_tokens_learns_resumes_exactly_and_reports_bits_per_byte(tmp_path):
    write_prepared(tmp_path / "data")
    straight = tokens_config(tmp_path / "straight", tmp_path / "data", steps=20, eval_every=10)
    result = train(straight)
    loss = [r["loss"] for r in read_metrics(tmp_path / "straight") if "loss" in r]
    assert loss[-1] < loss[0] * 0.8
    # Byte tokens with one EOS per document: bits per byte is bits per token times tokens per byte.
    spec = json.loads((tmp_path / "data" / "spec.json").read_text())["splits"]["eval"]
    expected = result.eval_metrics["eval_loss"] / np.log(2) * spec["tokens"] / spec["bytes"]
    assert result.eval_metrics["eval_bits_per_byte"] == pytest.approx(expected)
    train(tokens_config(tmp_path / "resumed", tmp_path / "data", steps=10, eval_every=10))
    train(tokens_config(tmp_path / "resumed", tmp_path / "data", steps=20, eval_every=10))
    resumed = [r["loss"] for r in read_metrics(tmp_path / "resumed") if "loss" in r]
    np.testing.assert_allclose(resumed, loss, rtol=1e-5)
