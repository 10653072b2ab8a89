"""The thread pools that run the embedded server's gRPC and REST requests.

grpc.server hands every RPC to its pool's `submit()` and uses what comes back
only through `add_done_callback` (to count RPCs in flight); the REST handlers
await `in_pool`, which answers their event loop itself. A
concurrent.futures.ThreadPoolExecutor does more per call than that: a Future
with its own Condition, an idle-thread semaphore, a global shutdown lock. With
batching, where each request's share of the model's work is small, that
bookkeeping shows: batched Predict of the digits CNN on one core at
concurrency 32 ran about 3,630 requests/s on it and 3,830 on this pool
(six alternating runs each). Here a call is one slotted object on a
SimpleQueue (a C queue) that a fixed set of threads drains.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Callable

log = logging.getLogger("tfbig.serving")


class HandlerCall:
    """One submitted call: what grpc.server needs of a Future and nothing more."""

    __slots__ = ("function", "args", "_done", "_callbacks")

    def __init__(self, function: Callable, args: tuple):
        self.function = function
        self.args = args
        self._done = False
        self._callbacks: list[Callable] = []

    def add_done_callback(self, callback: Callable[["HandlerCall"], None]) -> None:
        """Runs `callback(self)` once the call has run, at once if it already has."""
        self._callbacks.append(callback)
        if self._done:  # the worker may have drained the list just before the append
            self._run_callbacks()

    def _finish(self) -> None:
        # `_done` is set before draining and read after appending, and list.pop() is
        # atomic, so every callback runs exactly once whichever thread gets there first.
        self._done = True
        self._run_callbacks()

    def _run_callbacks(self) -> None:
        while self._callbacks:
            try:
                callback = self._callbacks.pop()
            except IndexError:  # the other thread took the last one
                return
            callback(self)


class HandlerPool:
    """`threads` threads running submitted calls in order of arrival; threads are named `name-i`."""

    def __init__(self, threads: int, name: str):
        self._calls: queue.SimpleQueue[HandlerCall | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def submit(self, function: Callable, *args) -> HandlerCall:
        call = HandlerCall(function, args)
        self._calls.put(call)
        return call

    def shutdown(self) -> None:
        """Let the calls already submitted run, then end the threads."""
        for _ in self._threads:
            self._calls.put(None)
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while (call := self._calls.get()) is not None:
            try:
                call.function(*call.args)
            except Exception:  # handlers answer their own errors; anything else must not end the thread
                log.exception("a request handler failed")
            call._finish()
            # An idle thread must not hold its last call: through its arguments and its answer
            # that would keep the request's decoded body alive, up to one body per thread.
            del call


def in_pool(pool: HandlerPool, function: Callable, *args, on_abandoned: Callable | None = None) -> asyncio.Future:
    """`function(*args)` on `pool`, answered as a future of the running event loop.

    `function` returns its errors as values (a pool thread has no caller to raise to).
    run_in_executor would chain a concurrent.futures.Future to an asyncio one on every
    request. When the loop has stopped waiting (asyncio.wait_for timed out, the handler
    was cancelled), the result goes to `on_abandoned`, to release what it holds.
    """
    loop = asyncio.get_running_loop()
    answer = loop.create_future()

    def deliver(result):
        if not answer.cancelled():
            answer.set_result(result)
        elif on_abandoned is not None:
            on_abandoned(result)

    def work():
        loop.call_soon_threadsafe(deliver, function(*args))

    pool.submit(work)
    return answer
