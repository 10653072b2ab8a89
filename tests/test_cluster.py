"""Real multi-process clusters on 127.0.0.1, started by `tfbig launch`.

Few and small, since each starts several TensorFlow processes: two
MultiWorkerMirroredStrategy workers against a single-process mirrored run, a
parameter-server cluster learning digits, the failures a long run meets
(a worker killed, a worker preempted), and what the workers of a cluster read
from prepared tokens, in-process or through a tf.data service.
"""

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest
import yaml

from tfbig.config import config_from_dict
from tfbig.train import read_metrics, train

from corpus import shard_windows, write_prepared
from runs import GPT, TEXT

pytestmark = pytest.mark.slow

# Runs `tfbig train CONFIG` and prints its result as one JSON line. With
# FAIL_AT set, worker 1 of the first attempt kills itself with that signal
# once the chief has written checkpoint FAIL_AT: a failure mid-run.
TRAIN_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys, threading, time
    import tfbig
    from tfbig.config import load_config
    from tfbig.train import train

    config = load_config(sys.argv[1])
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    fail_at = os.environ.get("FAIL_AT")
    if fail_at and task == {"type": "worker", "index": 1} \\
            and os.environ["TFBIG_LAUNCH_ATTEMPT"] == "0":
        marker = os.path.join(config.output.dir, "checkpoints", f"ckpt-{fail_at}.index")
        def fail():
            while not os.path.exists(marker):
                time.sleep(0.02)
            os.kill(os.getpid(), getattr(signal, os.environ["FAIL_SIGNAL"]))
        threading.Thread(target=fail, daemon=True).start()
    result = train(config)
    print("RESULT " + json.dumps({"loss": result.train_metrics.get("loss"),
                                  **result.eval_metrics}), flush=True)
""")


def gpt_config(run_dir, strategy, **train):
    settings = {"steps": 10, "batch_size": 8, "steps_per_execution": 5, "log_every": 1,
                "eval_every": 0, "eval_steps": 2, "checkpoint_every": 5,
                "progress_bar": False, "optimizer": {"name": "sgd", "learning_rate": 0.1},
                "schedule": {"name": "constant"}, **train}
    return {"model": GPT, "data": TEXT, "train": settings,
            "distribute": {"strategy": strategy, "devices": 2}, "output": {"dir": str(run_dir)}}


def launch(tmp_path, config: dict, *launch_args, env=None, timeout=300, script=TRAIN_SCRIPT):
    """`tfbig launch ... -- python SCRIPT CONFIG`; returns the finished process."""
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    script_path = tmp_path / "train_script.py"
    script_path.write_text(script)
    return subprocess.run(
        [sys.executable, "-m", "tfbig.cli", "launch", *launch_args, "--",
         sys.executable, str(script_path), str(config_path)],
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
    )


def results_by_task(output: str) -> dict:
    """{"worker 0": {...}, ...} from the launcher's task-prefixed RESULT lines."""
    found = {}
    for line in output.splitlines():
        if "] RESULT " in line:
            task, _, payload = line.partition("] RESULT ")
            found[task.strip("[ ")] = json.loads(payload)
    return found


def train_losses(run_dir):
    return [r["loss"] for r in read_metrics(run_dir) if "loss" in r]


def test_multi_worker_equals_single_process_mirrored(tmp_path):
    done = launch(tmp_path, gpt_config(tmp_path / "cluster", "multi_worker"), "--workers", "2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    workers = results_by_task(done.stdout)
    assert set(workers) == {"worker 0", "worker 1"}, done.stdout[-2000:]
    assert workers["worker 0"] == workers["worker 1"]  # both report the same losses

    mirrored = config_from_dict(gpt_config(tmp_path / "mirrored", "mirrored"))
    result = train(mirrored)
    np.testing.assert_allclose(train_losses(tmp_path / "cluster"),
                               train_losses(tmp_path / "mirrored"), rtol=1e-5)
    assert workers["worker 0"]["eval_loss"] == pytest.approx(
        result.eval_metrics["eval_loss"], rel=1e-5)
    # Only the chief wrote the run directory; the other worker's scratch is gone.
    assert sorted(os.listdir(tmp_path / "cluster")) == [
        "checkpoints", "config.yaml", "logs", "metrics.jsonl"]


def test_parameter_server_cluster_learns_digits_despite_losing_a_worker(tmp_path):
    # Worker 1 is killed once checkpoint 100 exists; the coordinator re-runs
    # its steps on worker 0 and still finishes every scheduled step.
    config = {
        "model": {"name": "cnn", "filters": [16, 32], "blocks_per_stage": 1},
        "data": {"name": "digits", "eval_fraction": 0.2},
        "train": {"steps": 200, "batch_size": 64, "steps_per_execution": 10, "log_every": 50,
                  "eval_every": 100, "checkpoint_every": 100, "progress_bar": False,
                  "optimizer": {"name": "adam", "learning_rate": 3e-3},
                  "schedule": {"name": "cosine", "warmup_steps": 10}},
        "distribute": {"strategy": "parameter_server"},
        "output": {"dir": str(tmp_path / "run")},
    }
    done = launch(tmp_path, config, "--workers", "2", "--ps", "1", "--evaluator",
                  env={"FAIL_AT": "100", "FAIL_SIGNAL": "SIGKILL"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "worker 1 exited with -9; the coordinator goes on" in done.stdout
    chief = results_by_task(done.stdout)["chief"]
    assert [r["step"] for r in read_metrics(tmp_path / "run") if "loss" in r][-1] == 200
    assert chief["eval_accuracy"] >= 0.90, chief
    evaluated = read_metrics(tmp_path / "run" / "evaluator")
    # The evaluator takes each checkpoint it finds (one written while it was
    # busy or still starting may be skipped for a newer one), up to the last.
    steps = [r["step"] for r in evaluated]
    assert steps[-1] == 200 and set(steps) <= {100, 200}
    assert evaluated[-1]["eval_accuracy"] == pytest.approx(chief["eval_accuracy"])


# Reports where the chief's GPT keeps its token embedding, then trains.
SHARD_PROBE = textwrap.dedent("""
    import json, sys
    import tfbig
    from tfbig.config import load_config
    from tfbig.train import run

    build_trainer = run.build_trainer
    def reporting_build_trainer(config, strategy, **options):
        trainer = build_trainer(config, strategy, **options)
        table = trainer.model.get_layer("token_embedding").embeddings
        print("SHARDS " + json.dumps([[v.shape.as_list(), v.device] for v in table.variables]))
        return trainer
    run.build_trainer = reporting_build_trainer
    result = run.train(load_config(sys.argv[1]))
    print("RESULT " + json.dumps({"loss": result.train_metrics["loss"]}), flush=True)
""")


def test_parameter_server_splits_the_embedding_over_the_ps_tasks(tmp_path):
    config = gpt_config(tmp_path / "run", "parameter_server", steps=10, log_every=10,
                        optimizer={"name": "adam", "learning_rate": 3e-3})
    config["distribute"]["min_shard_bytes"] = 4096  # the 32 KiB table -> one shard per ps
    done = launch(tmp_path, config, "--workers", "1", "--ps", "2", script=SHARD_PROBE)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    shards = json.loads(done.stdout.split("[chief] SHARDS ")[1].splitlines()[0])
    assert [shape for shape, _ in shards] == [[128, 32], [128, 32]]
    assert [device.split("/device")[0] for _, device in shards] == [
        "/job:ps/replica:0/task:0", "/job:ps/replica:0/task:1"]
    assert np.isfinite(results_by_task(done.stdout)["chief"]["loss"])


@pytest.mark.parametrize("fail_signal", ["SIGKILL", "SIGTERM"])
def test_multi_worker_run_survives_a_lost_worker(tmp_path, fail_signal):
    # SIGKILL: the worker dies; the launcher restarts the cluster from the last
    # checkpoint. SIGTERM: the worker is preempted; every worker saves at the
    # same step first (PreemptionCheckpointHandler), then the cluster restarts.
    config = gpt_config(tmp_path / "run", "multi_worker", steps=60, log_every=5,
                        checkpoint_every=25, keep_checkpoints=20,
                        optimizer={"name": "adam", "learning_rate": 3e-3})
    done = launch(tmp_path, config, "--workers", "2", "--max-restarts", "1",
                  env={"FAIL_AT": "25", "FAIL_SIGNAL": fail_signal})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "restart" in output.lower()
    assert set(results_by_task(done.stdout)) == {"worker 0", "worker 1"}
    records = [r for r in read_metrics(tmp_path / "run") if "loss" in r]
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps)) and steps[-1] == 60  # continuous, finished
    assert all(np.isfinite(r["loss"]) for r in records)
    saved = sorted(int(p.split("-")[1].split(".")[0])
                   for p in os.listdir(tmp_path / "run" / "checkpoints") if p.endswith(".index"))
    assert saved[-1] == 60
    if fail_signal == "SIGTERM":
        # The preemption checkpoint lies between the regular ones (25, 50, 60).
        assert set(saved) - {25, 50, 60}, (saved, output[-3000:])


SEQ = 16

# The chief of a parameter-server cluster builds the trainer as `tfbig train`
# does, then asks the workers for batches of the very iterator training uses:
# each scheduled read returns the index of the worker that ran it and the
# windows that worker's pipeline gave. Worker and ps tasks serve as usual.
PS_READ_PROBE = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    import tfbig
    from tfbig.config import load_config
    from tfbig.train.data_service import training_data_service
    from tfbig.distribute import make_strategy
    from tfbig.train import run

    config = load_config(sys.argv[1])
    if json.loads(os.environ["TF_CONFIG"])["task"]["type"] != "chief":
        run.train(config)  # serves until stopped
    strategy = make_strategy(config.distribute)
    trainer = run.build_trainer(config, strategy, data_service=training_data_service(config))
    iterator = trainer.train_iterator()

    @tf.function
    def read(iterator):
        inputs, targets = next(iterator)
        return (tf.distribute.coordinator.experimental_get_current_worker_index(),
                strategy.experimental_local_results(inputs)[0],
                strategy.experimental_local_results(targets)[0])

    reads = [trainer.execution.coordinator.schedule(read, args=(iterator,)) for _ in range(30)]
    trainer.execution.coordinator.join()
    by_worker = {}
    for result in reads:
        worker, inputs, targets = (np.asarray(v) for v in result.fetch())
        by_worker.setdefault(int(worker), []).extend(
            np.concatenate([x, y[-1:]]).astype(np.int32).tobytes().hex() for x, y in zip(inputs, targets))
    print("RESULT " + json.dumps(by_worker), flush=True)
""")


def tokens_gpt_config(tmp_path, strategy, **train):
    """A tiny GPT on a prepared directory of 4 train shards (byte tokens).

    Two eval shards: multi-worker eval reads one per worker, locally.
    """
    write_prepared(tmp_path / "data", (("train", 4), ("eval", 2)))
    config = gpt_config(tmp_path / "run", strategy, **train)
    config["model"] = {**GPT, "max_len": SEQ}
    config["data"] = {"name": "tokens", "paths": [str(tmp_path / "data")], "seq_len": SEQ}
    return config


def train_windows(tmp_path, shards=slice(None)) -> Counter:
    """How often each window (hex) occurs in these train shards: text repeats, so some do twice."""
    spec = json.loads((tmp_path / "data" / "spec.json").read_text())
    return Counter(w.hex() for w in shard_windows(tmp_path / "data", spec["splits"]["train"]["shards"][shards], SEQ))


@pytest.mark.parametrize("data_service_workers", [0, 2])
def test_parameter_server_workers_read_disjoint_data(tmp_path, data_service_workers):
    # The dataset function is traced once on the chief; without the worker's
    # index fed in at run time, both workers read the very same batches.
    config = tokens_gpt_config(tmp_path, "parameter_server")
    done = launch(tmp_path, config, "--workers", "2", "--ps", "1",
                  "--data-service-workers", str(data_service_workers), script=PS_READ_PROBE)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    read = {int(w): windows for w, windows in results_by_task(done.stdout)["chief"].items()}
    assert set(read) == {0, 1}, {w: len(windows) for w, windows in read.items()}
    assert sum(map(len, read.values())) == 30 * 8
    # Far less than an epoch, so disjoint reads read no window more often than the
    # data holds it; workers reading the same batches read 100s of them twice.
    assert Counter(read[0] + read[1]) <= train_windows(tmp_path)
    if not data_service_workers:  # (through the service, any worker may read any shard)
        for worker in (0, 1):  # shards w and w + 2 are worker w's own
            assert set(read[worker]) <= set(train_windows(tmp_path, slice(worker, None, 2)))


# Trains as `tfbig train` does, recording (from inside the compiled step) each
# window this worker's replica trained on.
RECORDING_TRAIN = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    import tfbig
    from tfbig.config import load_config
    from tfbig.train import run
    from tfbig.train.hooks import TrainingHooks

    trained_on = []

    class RecordWindows(TrainingHooks):
        def per_example_loss(self, inputs, targets, logits):
            def record(inputs, targets):
                trained_on.extend(np.concatenate([x, y[-1:]]).astype(np.int32).tobytes().hex()
                                  for x, y in zip(inputs.numpy(), targets.numpy()))
                return 0
            tf.py_function(record, [inputs, targets], tf.int32)
            return None

    build_trainer = run.build_trainer
    run.build_trainer = lambda config, strategy, **options: build_trainer(
        config, strategy, hooks=RecordWindows(), **options)
    result = run.train(load_config(sys.argv[1]))
    print("RESULT " + json.dumps({"windows": trained_on, "loss": result.train_metrics["loss"],
                                  "service": os.environ["TFBIG_DATA_SERVICE"]}), flush=True)
""")


def service_processes(dispatcher: str) -> list[int]:
    """Processes still running `tfbig data service` for `dispatcher` (grpc://127.0.0.1:PORT)."""
    port = dispatcher.rsplit(":", 1)[1]
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().split(")")[-1].split()[0]
        except OSError:
            continue
        if "service" in args and state != "Z" and (dispatcher in args or port in args):
            found.append(int(pid))
    return found


def test_launched_data_service_feeds_two_workers_disjoint_windows_and_stops(tmp_path):
    config = tokens_gpt_config(tmp_path, "multi_worker", steps=10)
    done = launch(tmp_path, config, "--workers", "2", "--data-service-workers", "2",
                  script=RECORDING_TRAIN)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[dispatcher] tf.data service dispatcher serving at grpc://" in done.stdout
    for index in (0, 1):
        assert f"[data worker {index}] tf.data service worker on 127.0.0.1" in done.stdout
    workers = results_by_task(done.stdout)
    trained = [workers[f"worker {i}"]["windows"] for i in (0, 1)]
    assert [len(windows) for windows in trained] == [10 * 4, 10 * 4]  # 10 steps of 4 per replica
    assert Counter(trained[0] + trained[1]) <= train_windows(tmp_path)  # disjoint, none twice
    assert np.isfinite(workers["worker 0"]["loss"])
    assert read_metrics(tmp_path / "run")[-1]["step"] == 10
    assert service_processes(workers["worker 0"]["service"]) == []  # stopped with the cluster
