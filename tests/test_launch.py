"""`tfbig launch` with cheap Python commands: environments, output, failures, restarts."""

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from tfbig.distribute.cluster import Cluster, k8s_manifest
from tfbig.distribute.data_service import LocalDataService
from tfbig.distribute.launch import Launcher


def launch(*args, script: str, timeout=60, **popen):
    """`tfbig launch ARGS -- python -c SCRIPT`, finished."""
    return subprocess.run(
        [sys.executable, "-m", "tfbig.cli", "launch", *args, "--",
         sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True, text=True, timeout=timeout, **popen)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is as good as gone
        return f.read().split(")")[-1].split()[0] != "Z"


def wait_gone(pids, seconds=10):
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def test_tf_config_of_each_layout():
    mwms = Cluster.local(2)
    assert mwms.tasks == [("worker", 0), ("worker", 1)]
    assert mwms.tf_config("worker", 1)["task"] == {"type": "worker", "index": 1}
    assert "GRPC_FAIL_FAST" not in mwms.environment("worker", 0)

    ps = Cluster.local(2, ps=1, evaluator=True)
    config = json.loads(ps.environment("evaluator", 0)["TF_CONFIG"])
    assert set(config["cluster"]) == {"chief", "worker", "ps"}  # evaluator not in the cluster
    assert config["task"] == {"type": "evaluator", "index": 0}
    assert ps.environment("ps", 0)["GRPC_FAIL_FAST"] == "use_caller"
    ports = [a.split(":")[1] for addresses in config["cluster"].values() for a in addresses]
    assert len(set(ports)) == 4
    with pytest.raises(ValueError, match="--workers must be at least 1"):
        Cluster.local(0)


def test_a_data_service_beside_the_cluster_is_in_no_tf_config_but_in_every_environment():
    cluster = Cluster.local(2, data_service_workers=2)
    service = cluster.data_service
    assert cluster.tasks == [("worker", 0), ("worker", 1)]
    assert set(cluster.tf_config("worker", 0)["cluster"]) == {"worker"}
    assert cluster.environment("worker", 1)["TFBIG_DATA_SERVICE"] == service.address
    tasks = service.tasks()
    assert [(kind, index) for kind, index, _ in tasks] == [
        ("dispatcher", 0), ("data worker", 0), ("data worker", 1)]
    assert tasks[0][2][-5:] == ["data", "service", "dispatcher", "--port", str(service.dispatcher_port)]
    assert tasks[2][2][-7:] == ["worker", "--dispatcher", service.address, "--host", "127.0.0.1",
                                "--port", str(service.worker_ports[1])]
    ports = [a.split(":")[1] for a in cluster.addresses["worker"]]
    ports += [str(service.dispatcher_port), *map(str, service.worker_ports)]
    assert len(set(ports)) == 5  # chosen together, so none twice
    assert Cluster.local(2).data_service is None
    with pytest.raises(ValueError, match="--data-service-workers must be 0 or more"):
        Cluster.local(1, data_service_workers=-1)


def test_print_tf_config_and_usage_errors():
    done = subprocess.run([sys.executable, "-m", "tfbig.cli", "launch", "--workers", "2",
                           "--ps", "1", "--print-tf-config"], capture_output=True, text=True)
    lines = done.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["chief", "0"], ["worker", "0"],
                                                    ["worker", "1"], ["ps", "0"]]
    assert json.loads(lines[1].split(" ", 2)[2])["task"] == {"type": "worker", "index": 0}
    missing = subprocess.run([sys.executable, "-m", "tfbig.cli", "launch", "--workers", "2"],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "no command given" in missing.stderr


def test_k8s_manifest_has_a_headless_service_and_statefulset_per_task_type():
    text = k8s_manifest(Cluster(2, ps=1, evaluator=True), name="gpt", image="tfbig:1",
                        command=["tfbig", "train", "/cfg/gpt.yaml"])
    documents = list(yaml.safe_load_all(text))
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    for task in ("chief", "worker", "ps", "evaluator"):
        assert {("Service", f"gpt-{task}"), ("StatefulSet", f"gpt-{task}")} <= kinds
    sets = {d["metadata"]["name"]: d for d in documents if d["kind"] == "StatefulSet"}
    assert sets["gpt-worker"]["spec"]["replicas"] == 2
    assert all(d["spec"]["clusterIP"] == "None" for d in documents if d["kind"] == "Service")
    env = {e["name"]: e["value"] for e in
           sets["gpt-worker"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["CLUSTER"])["worker"] == ["gpt-worker-0.gpt-worker:2222",
                                                    "gpt-worker-1.gpt-worker:2222"]
    # The checked-in example is what the code writes.
    with open(os.path.join(os.path.dirname(__file__), "..", "serving", "k8s",
                           "training-cluster.yaml")) as f:
        example = f.read()
    assert list(yaml.safe_load_all(example)) == documents


def test_k8s_manifest_runs_a_tf_data_service_beside_the_training_tasks():
    cluster = Cluster.local(2, data_service_workers=3)
    text = k8s_manifest(cluster, name="lm", image="tfbig:1", command=["tfbig", "train", "/cfg/lm.yaml"])
    sets = {d["metadata"]["name"]: d for d in yaml.safe_load_all(text) if d["kind"] == "StatefulSet"}
    assert set(sets) == {"lm-dispatcher", "lm-data-worker", "lm-worker"}
    assert (sets["lm-dispatcher"]["spec"]["replicas"], sets["lm-data-worker"]["spec"]["replicas"]) == (1, 3)
    dispatcher = "grpc://lm-dispatcher-0.lm-dispatcher:2222"
    (trainer,) = sets["lm-worker"]["spec"]["template"]["spec"]["containers"]
    assert {"name": "TFBIG_DATA_SERVICE", "value": dispatcher} in trainer["env"]
    (dispatching,) = sets["lm-dispatcher"]["spec"]["template"]["spec"]["containers"]
    assert dispatching["command"] == ["tfbig", "data", "service", "dispatcher", "--port", "2222"]
    (worker,) = sets["lm-data-worker"]["spec"]["template"]["spec"]["containers"]
    # The shell runs what a pod would: the worker registers under its own stable pod name.
    script, _, *args = worker["command"][2:]
    shown = subprocess.run(["/bin/sh", "-c", script.replace("exec ", "exec echo "), "--", *args],
                           env={"HOSTNAME": "lm-data-worker-2"}, capture_output=True, text=True).stdout
    assert shown.split() == ["tfbig", "data", "service", "worker", "--dispatcher", dispatcher,
                             "--port", "2222", "--host", "lm-data-worker-2.lm-data-worker"]


def test_output_is_prefixed_per_task_and_success_stops_the_ps(tmp_path):
    done = launch("--workers", "2", "--ps", "1", script="""
        import json, os, sys, time
        task = json.loads(os.environ["TF_CONFIG"])["task"]
        print("hello from", task["type"], task["index"], flush=True)
        sys.stdout.write("no newline at the end")
        sys.stdout.flush()
        open(f"{task['type']}-{task['index']}.printed", "w").close()
        if task["type"] == "chief":  # the others are stopped once it is done: let them print first
            while len([name for name in os.listdir() if name.endswith(".printed")]) < 4:
                time.sleep(0.05)
        if task["type"] == "ps":
            time.sleep(600)   # serves until stopped
    """, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for task in ("chief", "worker 0", "worker 1", "ps 0"):
        assert f"[{task}] hello from {task.split()[0]}" in "\n".join(lines)
        assert f"[{task}] no newline at the end" in lines


@pytest.mark.slow
def test_the_evaluator_finishes_its_last_evaluation_after_the_chief_is_done():
    done = launch("--workers", "1", "--ps", "1", "--evaluator", script="""
        import json, os, time
        kind = json.loads(os.environ["TF_CONFIG"])["task"]["type"]
        if kind == "ps":
            time.sleep(600)   # serves until stopped
        if kind == "evaluator":
            time.sleep(3)     # still evaluating the final checkpoint when the chief exits
        print("finished", kind, flush=True)
    """)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[evaluator 0] finished evaluator" in done.stdout.splitlines()
    assert "[ps 0] finished ps" not in done.stdout


def test_a_failed_task_stops_every_task_and_their_children(tmp_path):
    start = time.monotonic()
    done = launch("--workers", "3", "--grace-period", "2", script=f"""
        import json, os, subprocess, sys, time
        index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
        child = subprocess.Popen(["sleep", "600"])
        with open(os.path.join({str(tmp_path)!r}, f"pids-{{index}}"), "w") as f:
            f.write(f"{{os.getpid()}} {{child.pid}}")
        if index == 1:
            time.sleep(1)
            sys.exit(3)
        time.sleep(600)
    """)
    assert done.returncode == 3
    assert "[launch] worker 1 exited with 3; cluster stopped" in done.stdout
    pids = [int(p) for f in tmp_path.glob("pids-*") for p in f.read_text().split()]
    assert len(pids) == 6 and not wait_gone(pids)
    assert time.monotonic() - start < 30


def test_ctrl_c_stops_the_cluster_with_no_orphans(tmp_path):
    launcher = subprocess.Popen(
        [sys.executable, "-m", "tfbig.cli", "launch", "--workers", "2", "--grace-period", "2",
         "--", sys.executable, "-c", textwrap.dedent(f"""
            import json, os, subprocess, time
            index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
            child = subprocess.Popen(["sleep", "600"])
            with open(os.path.join({str(tmp_path)!r}, f"pids-{{index}}"), "w") as f:
                f.write(f"{{os.getpid()}} {{child.pid}}")
            time.sleep(600)
         """)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("pids-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)  # let both write their pids completely
    launcher.send_signal(signal.SIGINT)
    out, _ = launcher.communicate(timeout=30)
    assert launcher.returncode == 130, out
    pids = [int(p) for f in tmp_path.glob("pids-*") for p in f.read_text().split()]
    assert len(pids) == 4 and not wait_gone(pids)


def test_max_restarts_restarts_the_whole_cluster():
    done = launch("--workers", "2", "--max-restarts", "2", "--grace-period", "2", script="""
        import os, sys, time
        attempt = int(os.environ["TFBIG_LAUNCH_ATTEMPT"])
        print("attempt", attempt, flush=True)
        sys.exit(5 if attempt < 2 else 0)
    """)
    assert done.returncode == 0, done.stdout
    assert "(restart 1 of 2)" in done.stdout and "(restart 2 of 2)" in done.stdout
    assert "[worker 1] attempt 2" in done.stdout

    gave_up = launch("--workers", "1", "--max-restarts", "1", script="import sys; sys.exit(4)")
    assert gave_up.returncode == 4 and "cluster stopped" in gave_up.stdout


def test_a_dead_parameter_server_worker_does_not_stop_the_cluster():
    done = launch("--workers", "2", "--ps", "1", "--grace-period", "2", script="""
        import json, os, sys, time
        task = json.loads(os.environ["TF_CONFIG"])["task"]
        if task == {"type": "worker", "index": 1}:
            sys.exit(9)
        time.sleep(1 if task["type"] == "chief" else 600)
        print("done", flush=True)
    """)
    assert done.returncode == 0, done.stdout
    assert "worker 1 exited with 9; the coordinator goes on" in done.stdout
    assert "[chief] done" in done.stdout


@dataclasses.dataclass(frozen=True)
class ScriptedService(LocalDataService):
    """A data service whose processes run `script` (NAME, DIR as arguments) instead of TensorFlow."""

    script: str = ""

    def tasks(self):
        run = [sys.executable, "-c", textwrap.dedent(self.script)]
        return [(kind, index, [*run, f"{kind}-{index}".replace(" ", "-")])
                for kind, index, _ in super().tasks()]


def test_a_failed_data_service_process_stops_the_cluster_and_its_children(tmp_path):
    # Every process starts a child and records both pids; then the dispatcher fails.
    script = f"""
        import glob, os, subprocess, sys, time
        name = sys.argv[1] if len(sys.argv) > 1 else "trainer"
        child = subprocess.Popen(["sleep", "600"])
        with open(os.path.join({str(tmp_path)!r}, "writing-" + name), "w") as f:
            f.write(f"{{os.getpid()}} {{child.pid}}")
        os.rename(f.name, os.path.join({str(tmp_path)!r}, "pids-" + name))
        if name == "dispatcher-0":
            while len(glob.glob(os.path.join({str(tmp_path)!r}, "pids-*"))) < 3:
                time.sleep(0.05)
            sys.exit(3)
        time.sleep(600)
    """
    cluster = Cluster.local(1, data_service_workers=1)
    scripted = dataclasses.replace(cluster, data_service=ScriptedService(
        cluster.data_service.dispatcher_port, cluster.data_service.worker_ports, script))
    out = io.BytesIO()
    launcher = Launcher(lambda: scripted, [sys.executable, "-c", textwrap.dedent(script)],
                        grace_period_s=2, out=out)
    assert launcher.run() == 3
    assert "[launch] dispatcher exited with 3; cluster stopped" in out.getvalue().decode()
    pids = [int(p) for f in tmp_path.glob("pids-*") for p in f.read_text().split()]
    assert len(pids) == 6 and not wait_gone(pids)
