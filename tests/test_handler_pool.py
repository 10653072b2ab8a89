"""The embedded server's request handler pools: what grpc.server relies on from its thread pool."""

import threading
import time
import weakref

import tfbig  # noqa: F401  (Keras 2 before TensorFlow loads)

from tfbig.serving.server.handler_pool import HandlerPool


def test_calls_run_on_the_pool_threads_and_shutdown_lets_queued_ones_finish():
    pool = HandlerPool(2, name="test")
    release, ran = threading.Event(), []
    lock = threading.Lock()

    def record(value):
        release.wait()
        with lock:
            ran.append((value, threading.current_thread().name.startswith("test-")))

    for value in range(10):  # more calls than threads: eight wait in the queue
        pool.submit(record, value)
    release.set()
    pool.shutdown()
    assert sorted(ran) == [(value, True) for value in range(10)]


def test_a_done_callback_runs_once_whether_added_before_or_after_the_call_ran():
    pool = HandlerPool(1, name="test")
    started, release = threading.Event(), threading.Event()
    blocked = pool.submit(lambda: (started.set(), release.wait()))
    started.wait()
    before = []
    blocked.add_done_callback(before.append)  # still running: the worker calls it
    release.set()
    finished = pool.submit(lambda: None)
    pool.shutdown()  # both calls have run
    after = []
    finished.add_done_callback(after.append)  # already done: called at once
    assert before == [blocked] and after == [finished]


def test_a_failing_call_leaves_its_thread_serving_and_still_completes(caplog):
    pool = HandlerPool(1, name="test")
    completed, results = [], []
    failing = pool.submit(lambda: 1 / 0)
    failing.add_done_callback(completed.append)
    pool.submit(results.append, "next")
    pool.shutdown()
    assert results == ["next"]
    assert completed == [failing] and "a request handler failed" in caplog.text


def test_an_idle_thread_holds_nothing_of_the_call_it_ran():
    # Through a call's arguments and its answer the embedded server's handlers reach the
    # request's decoded body: a thread that kept its last call kept that body alive.
    class Body:
        pass

    pool = HandlerPool(1, name="test")
    body, answered = Body(), threading.Event()
    released = weakref.ref(body)
    pool.submit(lambda request: answered.set(), body)
    del body
    answered.wait()
    deadline = time.monotonic() + 5
    while released() is not None and time.monotonic() < deadline:  # the worker is past the call
        time.sleep(0.01)
    assert released() is None
    pool.shutdown()
