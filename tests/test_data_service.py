"""Training input through a real tf.data service, its dispatcher and workers in this process.

`DispatchServer` and `WorkerServer` here are the servers `tfbig data service`
runs, talking gRPC on localhost; clusters of processes reading through a
service that `tfbig launch` started are in test_cluster.py.
"""

import contextlib
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

from tfbig.config import ConfigError, config_from_dict, load_config
from tfbig.data import load_data
from tfbig.data.service import DataService
from tfbig.train.data_service import training_data_service
from tfbig.distribute.cluster import free_ports
from tfbig.distribute.data_service import ENVIRONMENT, DataServiceError, wait_for_dispatcher
from tfbig.train import read_metrics, train

from corpus import shard_windows, write_prepared
from runs import GPT, make_config

SEQ = 16


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    directory = tmp_path_factory.mktemp("prepared")
    return directory, write_prepared(directory, (("train", 4), ("eval", 1)))


@contextlib.contextmanager
def running_service(workers: int):
    """A dispatcher and `workers` tf.data workers; yields the dispatcher's grpc:// address."""
    service = tf.data.experimental.service
    dispatcher = service.DispatchServer()
    servers = [service.WorkerServer(service.WorkerConfig(dispatcher_address=dispatcher.target[len("grpc://"):]))
               for _ in range(workers)]
    try:
        yield dispatcher.target
    finally:
        for server in servers:
            server.stop()
        dispatcher.stop()


def train_split(directory):
    return load_data(config_from_dict({"data": {"name": "tokens", "paths": [str(directory)],
                                                "seq_len": SEQ}}).data).train


def rows(dataset, batches=None) -> list[bytes]:
    """Each window of the first `batches` (inputs, targets) batches, as bytes."""
    if batches is not None:
        dataset = dataset.take(batches)
    return [np.concatenate([x, y[-1:]]).tobytes()
            for inputs, targets in dataset.as_numpy_iterator() for x, y in zip(inputs, targets)]


@pytest.mark.parametrize("skip", [0, 37, "one epoch and a bit"])
def test_one_tf_data_worker_serves_exactly_the_in_process_stream(prepared, skip):
    # One worker takes every shard visit in order, so nothing depends on timing:
    # the service must give the very batches the in-process pipeline gives,
    # resumed at the same place.
    split = train_split(prepared[0])
    skip = split.num_examples + 5 if isinstance(skip, str) else skip
    stream = split.make_dataset(batch_size=4, shuffle=True, seed=3, repeat=True, skip_examples=skip)
    with running_service(workers=1) as dispatcher:
        served = DataService(dispatcher, run=f"exact-{skip}").distribute(stream)
        assert rows(served, 60) == rows(stream, 60)


def test_two_tf_data_workers_serve_every_window_of_an_epoch_once(prepared):
    directory, spec = prepared
    split = train_split(directory)
    epoch = split.make_dataset(batch_size=4, shuffle=True, seed=3, repeat=False, drop_remainder=False)
    with running_service(workers=2) as dispatcher:
        served = rows(DataService(dispatcher, run="epoch").distribute(epoch))
    assert sorted(served) == sorted(shard_windows(directory, spec["splits"]["train"]["shards"], SEQ))


def test_readers_of_one_job_read_disjoint_windows(prepared):
    split = train_split(prepared[0])
    stream = split.make_dataset(batch_size=4, shuffle=True, seed=3, repeat=True)
    with running_service(workers=2) as dispatcher:
        service = DataService(dispatcher, run="shared")
        readers = [iter(service.distribute(stream)) for _ in range(2)]
        read = [[], []]
        for _ in range(40):  # alternately, as two training workers would
            for reader, out in zip(readers, read):
                inputs, targets = next(reader)
                out += [np.concatenate([x, y[-1:]]).tobytes() for x, y in zip(inputs.numpy(), targets.numpy())]
    # Text repeats, so a few windows occur twice in the data; none may be read more often.
    every = Counter(shard_windows(prepared[0], prepared[1]["splits"]["train"]["shards"], SEQ))
    assert Counter(read[0] + read[1]) <= every


def tokens_config(run_dir, data_dir, **settings):
    return make_config(run_dir, model={**GPT, "vocab_size": 257, "max_len": SEQ},
                       data={"name": "tokens", "paths": [str(data_dir)], "seq_len": SEQ}, **settings)


def test_training_reads_through_the_launched_service_and_keeps_it_out_of_the_run(
        prepared, tmp_path, monkeypatch):
    with running_service(workers=2) as dispatcher:
        monkeypatch.setenv(ENVIRONMENT, dispatcher)  # as `tfbig launch --data-service-workers` does
        result = train(tokens_config(tmp_path / "run", prepared[0], steps=20))
    losses = [r["loss"] for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert len(losses) == 4 and losses[-1] < losses[0] * 0.9
    assert np.isfinite(result.eval_metrics["eval_loss"])  # eval read in-process
    # The launch's address is not what the run is: resuming elsewhere needs no edit.
    saved = load_config(str(tmp_path / "run" / "config.yaml"))
    assert saved.distribute.data_service.dispatcher == ""


def test_a_launched_dispatcher_is_checked_like_a_configured_one(prepared, tmp_path, monkeypatch):
    # (The config's own value is checked when the config loads: test_config.py.)
    base = {"model": {**GPT, "max_len": SEQ}, "output": {"dir": str(tmp_path / "run")},
            "data": {"name": "tokens", "paths": [str(prepared[0])], "seq_len": SEQ}}
    config = config_from_dict({**base, "distribute": {"data_service": {"dispatcher": "grpc://h:1"}}})
    monkeypatch.setenv(ENVIRONMENT, "grpc://127.0.0.1:2")
    with pytest.raises(ConfigError, match="the config names 'grpc://h:1' but tfbig launch started"):
        training_data_service(config)
    text = config_from_dict({**base, "data": {"name": "text", "seq_len": SEQ}})
    with pytest.raises(ConfigError, match="reads data.name 'tokens' through a tf.data service"):
        training_data_service(text)


def test_a_dispatcher_that_does_not_answer_is_an_error_not_a_hang():
    address = f"grpc://127.0.0.1:{free_ports(1)[0]}"
    with pytest.raises(DataServiceError, match=f"no tf.data service dispatcher answers at {address}"):
        wait_for_dispatcher(address, timeout_s=0.5)
