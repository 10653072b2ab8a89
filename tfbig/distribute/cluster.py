"""A cluster's shape and each task's TF_CONFIG (no TensorFlow needed).

Two layouts, as TensorFlow's strategies expect them:
- MultiWorkerMirroredStrategy: `worker` x N; worker 0 is the chief.
- ParameterServerStrategy: `chief` (the coordinator) + `worker` x N + `ps` x M.
An `evaluator` task is never in the cluster dict, only in its own `task`;
neither is a tf.data service beside the cluster (`data_service`), whose
address the training tasks get in their environment instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket

import yaml

from tfbig.distribute.data_service import ENVIRONMENT as DATA_SERVICE_ENVIRONMENT
from tfbig.distribute.data_service import LocalDataService


@dataclasses.dataclass(frozen=True)
class Cluster:
    workers: int
    ps: int = 0
    evaluator: bool = False
    addresses: dict = dataclasses.field(default_factory=dict)  # task type -> ["host:port"]
    data_service: LocalDataService | None = None

    def __post_init__(self):
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        if self.ps < 0:
            raise ValueError(f"--ps must be 0 or more, got {self.ps}")

    @classmethod
    def local(cls, workers: int, ps: int = 0, evaluator: bool = False,
              data_service_workers: int = 0) -> "Cluster":
        """A cluster (and a tf.data service with that many workers) on free 127.0.0.1 ports."""
        if data_service_workers < 0:
            raise ValueError(f"--data-service-workers must be 0 or more, got {data_service_workers}")
        counts = _counts(workers, ps)
        service_ports = 1 + data_service_workers if data_service_workers else 0
        # All ports from one call: each is held open until every one is chosen.
        ports = iter(free_ports(sum(counts.values()) + service_ports))
        addresses = {kind: [f"127.0.0.1:{next(ports)}" for _ in range(n)]
                     for kind, n in counts.items()}
        service = LocalDataService(next(ports), tuple(ports)) if service_ports else None
        return cls(workers, ps, evaluator, addresses, service)

    @property
    def tasks(self) -> list[tuple[str, int]]:
        """Every task to start: the cluster's, then the evaluator."""
        tasks = [(kind, i) for kind, n in _counts(self.workers, self.ps).items() for i in range(n)]
        return tasks + ([("evaluator", 0)] if self.evaluator else [])

    @property
    def finishing_tasks(self) -> list[tuple[str, int]]:
        """Tasks whose successful exit ends the run (ps tasks serve until stopped; see
        `Launcher` for the evaluator)."""
        if self.ps:
            return [("chief", 0)]
        return [("worker", i) for i in range(self.workers)]

    def tf_config(self, task_type: str, index: int) -> dict:
        return {"cluster": self.addresses, "task": {"type": task_type, "index": index}}

    def environment(self, task_type: str, index: int) -> dict[str, str]:
        env = {"TF_CONFIG": json.dumps(self.tf_config(task_type, index)),
               **(self.data_service.environment() if self.data_service else {})}
        if self.ps:
            # TF's advice for parameter-server training: fail RPCs to a dead
            # worker at once so the coordinator reschedules its steps.
            env["GRPC_FAIL_FAST"] = "use_caller"
        return env


def _counts(workers: int, ps: int) -> dict[str, int]:
    if ps:
        return {"chief": 1, "worker": workers, "ps": ps}
    return {"worker": workers}


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (all held open while choosing)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def k8s_manifest(cluster: Cluster, *, name: str, image: str, command: list[str],
                 port: int = 2222) -> str:
    """A Kubernetes manifest for `cluster`: per task type, a headless Service and a StatefulSet.

    StatefulSet pods have stable names `NAME-TYPE-i` resolvable through the
    headless Service, so TF_CONFIG is the same for every pod except the task
    index, which each pod reads from its own hostname's ordinal at start. A
    tf.data service (`--data-service-workers N`) becomes a `dispatcher` and N
    `data-worker` pods; the training tasks find the dispatcher in
    $TFBIG_DATA_SERVICE, and each data worker tells it its own stable name.
    """
    counts = dict(_counts(cluster.workers, cluster.ps))
    hosts = {kind: [f"{name}-{kind}-{i}.{name}-{kind}:{port}" for i in range(n)]
             for kind, n in counts.items()}
    if cluster.evaluator:
        counts["evaluator"] = 1
    env = [{"name": "CLUSTER", "value": json.dumps(hosts)}]
    if cluster.ps:
        env.append({"name": "GRPC_FAIL_FAST", "value": "use_caller"})
    documents = []
    if cluster.data_service:
        dispatcher = f"grpc://{name}-dispatcher-0.{name}-dispatcher:{port}"
        env.append({"name": DATA_SERVICE_ENVIRONMENT, "value": dispatcher})
        serve = ["tfbig", "data", "service"]
        documents += _task_pods(name, "dispatcher", 1, image, port, [], [
            *serve, "dispatcher", "--port", str(port)])
        # A worker's address must be its own pod name, which only the shell in the pod knows.
        documents += _task_pods(name, "data-worker", len(cluster.data_service.worker_ports), image,
                                port, [], ["/bin/sh", "-c", (
                                    f'exec "$@" --host "$HOSTNAME.{name}-data-worker"'), "--",
                                    *serve, "worker", "--dispatcher", dispatcher, "--port", str(port)])
    for kind, replicas in counts.items():
        entrypoint = (
            'export TF_CONFIG="{\\"cluster\\": $CLUSTER, \\"task\\": {\\"type\\": '
            f'\\"{kind}\\", \\"index\\": ${{HOSTNAME##*-}}}}}}"; exec "$@"'
        )
        documents += _task_pods(name, kind, replicas, image, port, env,
                                ["/bin/sh", "-c", entrypoint, "--", *command])
    return yaml.safe_dump_all(documents, sort_keys=False)


def _task_pods(name: str, kind: str, replicas: int, image: str, port: int, env: list[dict],
               command: list[str]) -> list[dict]:
    """The headless Service and the StatefulSet of one task type."""
    service = f"{name}-{kind}"
    def labels():  # a fresh dict each time: YAML would write a shared one as an &anchor
        return {"app": name, "task": kind}

    container = {"name": kind, "image": image, "command": command,
                 **({"env": env} if env else {}), "ports": [{"containerPort": port}]}
    return [{
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service, "labels": labels()},
        "spec": {"clusterIP": "None", "selector": labels(), "ports": [{"name": "grpc", "port": port}]},
    }, {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": service, "labels": labels()},
        "spec": {
            "serviceName": service, "replicas": replicas,
            # All pods at once: a cluster's tasks wait for each other.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels()},
            "template": {"metadata": {"labels": labels()},
                         "spec": {"containers": [container]}},
        },
    }]
