"""`tfbig launch`: run one command as every task of a local cluster.

Each task is a process in its own session (so stopping it stops whatever it
started), with its TF_CONFIG in the environment and its output printed line
by line behind `[type index] `. A tf.data service beside the cluster (a
dispatcher and data workers) starts first and is stopped with the rest; any
of its processes failing fails the cluster. The run succeeds when its finishing tasks
exit 0 (every worker, or the chief of a parameter-server cluster); ps tasks
are then stopped, and an evaluator once it has evaluated the final checkpoint
(it exits by itself; after EVALUATOR_FINISH_S it is stopped too). When a finishing task fails, every task is
stopped (SIGTERM, then SIGKILL after the grace period) and, with
`max_restarts`, the whole cluster starts again so the run resumes from its
last checkpoint. A parameter-server worker that dies is not a failure: the
coordinator re-runs its steps on the workers left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

from tfbig.distribute.cluster import Cluster

POLL_S = 0.1
# The chief writes the final checkpoint just before it exits; the evaluator
# needs this long at most to notice it and evaluate it (early stopping leaves
# it waiting for a step that never comes, hence a bound).
EVALUATOR_FINISH_S = 120.0
ATTEMPT_VARIABLE = "TFBIG_LAUNCH_ATTEMPT"


class Interrupted(Exception):
    """The launcher itself got SIGINT or SIGTERM."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


class Task:
    """One running task: its process and the thread echoing its output."""

    def __init__(self, kind: str, index: int, command: list[str], env: dict, out, lock):
        self.name = kind if kind in ("chief", "dispatcher") else f"{kind} {index}"
        self.key = (kind, index)
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        self._echo = threading.Thread(target=self._copy_output, args=(out, lock), daemon=True)
        self._echo.start()

    def _copy_output(self, out, lock) -> None:
        prefix = f"[{self.name}] ".encode()
        for line in iter(self.process.stdout.readline, b""):
            if not line.endswith(b"\n"):
                line += b"\n"  # a last line without newline still ends the line
            with lock:
                out.write(prefix + line)
                out.flush()

    @property
    def exit_code(self) -> int | None:
        return self.process.poll()

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def finish_output(self) -> None:
        self._echo.join(timeout=5)


class Launcher:
    """Runs `command` as every task of clusters made by `make_cluster`."""

    def __init__(self, make_cluster: Callable[[], Cluster], command: list[str], *,
                 max_restarts: int = 0, grace_period_s: float = 10.0, out=None):
        self._make_cluster = make_cluster
        self._command = command
        self._max_restarts = max_restarts
        self._grace_period_s = grace_period_s
        self._out = out or sys.stdout.buffer
        self._lock = threading.Lock()

    def say(self, message: str) -> None:
        with self._lock:
            self._out.write(f"[launch] {message}\n".encode())
            self._out.flush()

    def run(self) -> int:
        """Exit status: 0, the failed task's status, or 128 + the signal that stopped us."""
        previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for attempt in range(self._max_restarts + 1):
                failed, code = self._run_once(attempt)
                if not failed:
                    return 0
                if attempt < self._max_restarts:
                    self.say(f"{failed} exited with {code}; restarting the cluster "
                             f"(restart {attempt + 1} of {self._max_restarts})")
                else:
                    self.say(f"{failed} exited with {code}; cluster stopped")
            return code if code and code > 0 else 1
        except Interrupted as interrupt:
            self.say(f"{interrupt}: cluster stopped")
            return interrupt.exit_code
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _run_once(self, attempt: int) -> tuple[str | None, int | None]:
        cluster = self._make_cluster()
        tasks = []
        try:
            for kind, index, command in cluster.data_service.tasks() if cluster.data_service else ():
                tasks.append(Task(kind, index, command, dict(os.environ), self._out, self._lock))
            for kind, index in cluster.tasks:
                env = {**os.environ, **cluster.environment(kind, index),
                       ATTEMPT_VARIABLE: str(attempt)}
                tasks.append(Task(kind, index, self._command, env, self._out, self._lock))
            return self._supervise(cluster, tasks)
        finally:
            self._stop(tasks)

    def _supervise(self, cluster: Cluster, tasks: list[Task]) -> tuple[str | None, int | None]:
        finishing = [t for t in tasks if t.key in cluster.finishing_tasks]
        reported = set()
        while True:
            for task in tasks:
                code = task.exit_code
                if not code:  # running, or done (an evaluator may finish first)
                    continue
                if cluster.ps and task.key[0] == "worker":
                    if task.name not in reported:
                        reported.add(task.name)
                        self.say(f"{task.name} exited with {code}; the coordinator goes on "
                                 f"with the other workers")
                    continue
                return task.name, code
            if all(t.exit_code == 0 for t in finishing):
                self._await_evaluators(tasks)
                return None, 0
            time.sleep(POLL_S)

    def _await_evaluators(self, tasks: list[Task]) -> None:
        """Let evaluators finish the final checkpoint instead of stopping them mid-way."""
        evaluators = [t for t in tasks if t.key[0] == "evaluator" and t.exit_code is None]
        deadline = time.monotonic() + EVALUATOR_FINISH_S
        while any(t.exit_code is None for t in evaluators) and time.monotonic() < deadline:
            time.sleep(POLL_S)

    def _stop(self, tasks: list[Task]) -> None:
        """SIGTERM every task's process group, SIGKILL what is left after the grace period."""
        # A second Ctrl-C must not leave the cluster half stopped.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        running = [t for t in tasks if t.exit_code is None]
        for task in running:
            task.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + self._grace_period_s
        while any(t.exit_code is None for t in running) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        for task in tasks:
            # Also the group of tasks that exited: their children may live on.
            task.signal_group(signal.SIGKILL)
            task.process.wait()
            task.finish_output()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _raise_interrupted)


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)
