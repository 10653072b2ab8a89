"""A `tfbig serve` child process: start it, wait until it serves, stop it.

The pipeline and the validator serve through the very command a user runs
(`tfbig serve`, which picks `tensorflow_model_server` when it is installed and
the embedded server otherwise), in a child process of its own: what they
measure and check is then what a deployment gets, TensorFlow in the caller
is not shared with the server, and stopping it is a SIGTERM that drains
in-flight requests like a Kubernetes rollout does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tfbig.distribute.cluster import free_ports
from tfbig.serving.client import Client, Credentials
from tfbig.serving.errors import ServerStartError, ServingError

START_TIMEOUT_S = 300.0
STOP_GRACE_S = 15.0
POLL_S = 0.25


class ServerProcess:
    """`tfbig serve FLAGS` on free localhost ports; `with` starts and stops it.

    `flags` are tensorflow_model_server flags naming what to serve (e.g.
    `--model_config_file=...`); the ports are chosen here. Output goes to
    `log_path`, whose last lines explain a failed start. `credentials` are what the flags ask
    of a client (a token for --auth_token_file), sent while waiting for the model. `cpus`
    pins the server to those CPUs (a benchmark keeps its load generator off the server's cores).
    """

    def __init__(self, flags: list[str], *, model_name: str, log_path: str, engine: str = "auto",
                 start_timeout_s: float = START_TIMEOUT_S, cpus: set[int] | None = None,
                 credentials: Credentials | None = None):
        self.model_name = model_name
        self.cpus = cpus
        self.credentials = credentials or Credentials()  # what flags such as --auth_token_file ask of clients
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.grpc_port, self.rest_port = free_ports(2)
        self.flags = [f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
                      f"--engine={engine}", *flags]
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (benchmarks read its memory from /proc)."""
        return self._process.pid if self._process is not None else None

    @property
    def grpc_target(self) -> str:
        return f"localhost:{self.grpc_port}"

    @property
    def rest_target(self) -> str:
        return f"localhost:{self.rest_port}"

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "tfbig.cli", "serve", *self.flags]

    def start(self) -> "ServerProcess":
        """Launch, then return once the model has an AVAILABLE version (loaded and warmed up)."""
        os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
        with open(self.log_path, "ab") as log:
            # Its own session, so that stopping it reaches the model server it may exec.
            self._process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=None if self.cpus is None else lambda: os.sched_setaffinity(0, self.cpus))
        try:
            self._wait_available()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_available(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        with Client(self.grpc_target, timeout=5.0, max_retries=0,
                    **self.credentials.client_kwargs()) as client:
            while True:
                if self._process.poll() is not None:
                    raise ServerStartError(f"the server exited with status {self._process.returncode}: "
                                           f"{self.log_tail()}")
                states = _states(client, self.model_name)
                if any(s["state"] == "AVAILABLE" for s in states):
                    return
                failed = [s for s in states if s["state"] == "END" and s["error_message"]]
                if states and len(failed) == len(states):
                    raise ServerStartError(f"model {self.model_name!r} failed to load: "
                                           f"{failed[0]['error_message']}")
                if time.monotonic() > deadline:
                    raise ServerStartError(f"model {self.model_name!r} was not AVAILABLE after "
                                           f"{self.start_timeout_s:g} s: {self.log_tail()}")
                time.sleep(POLL_S)

    def log_tail(self, lines: int = 5) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                tail = [line.strip() for line in f.readlines()[-lines:] if line.strip()]
        except OSError:
            return "(no server log)"
        return " | ".join(tail) or "(the server printed nothing)"

    def stop(self) -> int | None:
        """SIGTERM (drain), then SIGKILL after the grace period; the exit status."""
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is None:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        return process.returncode

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _states(client: Client, model_name: str) -> list[dict]:
    """The model's version states; none while the server is starting or loading."""
    try:
        return client.status(model_name)
    except ServingError:
        return []


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass
