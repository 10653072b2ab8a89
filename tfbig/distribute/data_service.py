"""The processes of a tf.data service: a dispatcher and tf.data workers.

`tfbig data service dispatcher|worker` runs one of them until it is stopped;
`tfbig launch --data-service-workers N` starts a dispatcher and N workers on
this machine beside the training tasks and hands the training tasks the
dispatcher's address in $TFBIG_DATA_SERVICE (see `tfbig.data.service` for how
training reads from it). TensorFlow is imported only by the servers
themselves, so the launcher still starts at once.
"""

from __future__ import annotations

import dataclasses
import socket
import sys
import time

from tfbig.errors import RunError

ENVIRONMENT = "TFBIG_DATA_SERVICE"
# A launched dispatcher imports TensorFlow while the training tasks do (a
# minute on a busy 2-core machine); a wrong address fails after this long.
DISPATCHER_WAIT_S = 120.0


class DataServiceError(RunError, ConnectionError):
    """No tf.data service dispatcher answers at the configured address."""


@dataclasses.dataclass(frozen=True)
class LocalDataService:
    """A dispatcher and tf.data workers on 127.0.0.1 ports, as `tfbig launch` starts them."""

    dispatcher_port: int
    worker_ports: tuple[int, ...]

    @property
    def address(self) -> str:
        return f"grpc://127.0.0.1:{self.dispatcher_port}"

    def tasks(self) -> list[tuple[str, int, list[str]]]:
        """(kind, index, command) of each process, the dispatcher first."""
        serve = [sys.executable, "-m", "tfbig.cli", "data", "service"]
        workers = [("data worker", i, [*serve, "worker", "--dispatcher", self.address,
                                       "--host", "127.0.0.1", "--port", str(port)])
                   for i, port in enumerate(self.worker_ports)]
        return [("dispatcher", 0, [*serve, "dispatcher", "--port", str(self.dispatcher_port)]),
                *workers]

    def environment(self) -> dict[str, str]:
        """What a training task needs to read from this service."""
        return {ENVIRONMENT: self.address}


def host_and_port(address: str) -> tuple[str, int]:
    """("10.0.0.5", 5050) from "grpc://10.0.0.5:5050" (or "[::1]:5050")."""
    host, _, port = address.removeprefix("grpc://").rpartition(":")
    return host.strip("[]"), int(port)


def wait_for_dispatcher(address: str, timeout_s: float = DISPATCHER_WAIT_S) -> None:
    """Return once something accepts connections at `address`.

    TensorFlow retries an unreachable dispatcher silently and indefinitely, so
    without this a wrong address, or a dispatcher that never started, would
    hang the run instead of failing it.
    """
    host, port = host_and_port(address)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=5):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise DataServiceError(
                    f"no tf.data service dispatcher answers at {address} (waited {timeout_s:.0f} s); "
                    f"start one with `tfbig data service dispatcher --port {port}` or correct "
                    f"distribute.data_service.dispatcher") from None
            time.sleep(0.25)


def serve_dispatcher(port: int) -> None:
    """Run a dispatcher on `port` (0: any free port) until the process is stopped."""
    import tensorflow as tf

    server = tf.data.experimental.service.DispatchServer(
        tf.data.experimental.service.DispatcherConfig(port=port))
    print(f"tf.data service dispatcher serving at {server.target}", flush=True)
    _serve_until_stopped(server)


def serve_worker(dispatcher: str, *, host: str, port: int) -> None:
    """Run a tf.data worker for `dispatcher` until the process is stopped.

    `host` is the name the training tasks reach this worker by: the dispatcher
    passes it on to them, so on a real cluster it must be this machine's name.
    """
    import tensorflow as tf

    server = tf.data.experimental.service.WorkerServer(tf.data.experimental.service.WorkerConfig(
        dispatcher_address=dispatcher.removeprefix("grpc://"),
        worker_address=f"{host}:%port%", port=port))
    print(f"tf.data service worker on {host}, serving {dispatcher}", flush=True)
    _serve_until_stopped(server)


def _serve_until_stopped(server) -> None:
    """Keep `server` alive until Ctrl-C or SIGTERM.

    `server.join()` would block inside TensorFlow, where Python never gets to
    act on Ctrl-C; sleeping here lets it (SIGTERM ends the process either way).
    """
    while True:  # `server` stays referenced, so alive, in this frame
        time.sleep(3600)
