"""The embedded server's memory: what glibc's per-thread heaps and TensorFlow's kernels keep must not grow.

glibc raises its mmap threshold each time a mapped block is freed, after which
request-sized blocks come from the heaps of the many threads that serve
requests and stay there (see tfbig/serving/server/allocator.py); and what a
version's load frees stays in the arena of the thread that loaded it, so loads
run on one thread of the model manager's (tfbig/serving/server/models.py), and
what an unload frees is collected and handed back at once. oneDNN's kernels
would keep a primitive per batch size a client sends (tfbig/serving/server/onednn.py).
"""

import gc
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading

import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.config import model_server_config_pb2

from tfbig.serving.server.models import ModelManager, State
from serving_models import free_port, save_two_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Frees a 16 MiB mapped block (glibc would then raise its threshold to 16 MiB) and reports
# whether a 1 MiB block allocated next got a mapping of its own (mallinfo2's hblks).
CHECK = textwrap.dedent("""
    import ctypes, json, sys
    from tfbig.serving import EmbeddedServer, parse_serve_args

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def mapped_after_a_large_free():
        libc.free(libc.malloc(16 << 20))
        before = libc.mallinfo2().hblks
        block = libc.malloc(1 << 20)
        mapped = libc.mallinfo2().hblks > before
        libc.free(block)
        return mapped

    server = EmbeddedServer.from_options(parse_serve_args(
        ["--host=127.0.0.1", "--port=0", "--model_name=two", f"--model_base_path={sys.argv[1]}"]))
    server.start()
    try:
        print(json.dumps({"mapped": mapped_after_a_large_free()}))
    finally:
        server.stop(grace=0)
""")


# Fills a thread's heap with ~200 MB of 4 KB blocks and frees all but the last (so glibc
# cannot simply shrink the heap from its top), then reports RSS before and after the release.
TRIM_CHECK = textwrap.dedent("""
    import json, threading
    from tfbig.serving.server.allocator import release_free_memory

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    def fill_and_free():
        blocks = [bytes(4000) for _ in range(50_000)]
        return blocks[-1]

    held = []
    thread = threading.Thread(target=lambda: held.append(fill_and_free()))
    thread.start()
    thread.join()
    before = rss_mb()
    release_free_memory()
    print(json.dumps({"before": before, "after": rss_mb()}))
""")


# `tfbig serve` (the CLI's own entry) in a process of its own, reporting `report()` as JSON from
# a thread once the server announces that it serves (the line it prints on stderr before it waits
# for a signal), then stopping it. `serving_check(report)` is the script.
SERVE_HEADER = textwrap.dedent("""
    import ctypes, gc, json, os, signal, sys, threading
    from tfbig import cli

    serving = threading.Event()

    class Announcements:
        def __init__(self, stream):
            self.stream = stream

        def write(self, text):
            if text.startswith("serving "):
                serving.set()
            return self.stream.write(text)

        def __getattr__(self, name):
            return getattr(self.stream, name)

    def report_once_serving():
        serving.wait(timeout=60)
        try:
            print(json.dumps(report()))
        finally:
            os.kill(os.getpid(), signal.SIGTERM)
""")
SERVE_FOOTER = textwrap.dedent("""
    sys.stderr = Announcements(sys.stderr)
    threading.Thread(target=report_once_serving, daemon=True).start()
    sys.exit(cli.main(["serve", "--host=127.0.0.1", *sys.argv[1:]]))
""")


def serving_check(report: str) -> str:
    return SERVE_HEADER + textwrap.dedent(report) + SERVE_FOOTER


# How many objects were set aside from the collector, and how many loaded versions it still reaches.
COLLECTOR_REPORT = """
    def report():
        versions = [o for o in gc.get_objects() if type(o).__name__ == "Servable"]
        return {"frozen": gc.get_freeze_count(), "collectable_versions": len(versions)}
"""

# Whether oneDNN's kernels run, and how much more of the heap is in use after the model ran on
# 160 batch sizes it had not seen (each request 2 to 165 KB), once the request path is warm.
KERNEL_CACHE_REPORT = """
    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2

    def in_use_mb():
        gc.collect()
        info = libc.mallinfo2()
        return (info.uordblks + info.hblkhd) / 2**20

    def report():  # what imports TensorFlow comes after the server chose its kernels
        import numpy as np
        from tensorflow.python.util import _pywrap_util_port
        from tfbig.serving import Client

        port = next(arg.split("=")[1] for arg in sys.argv if arg.startswith("--port="))
        with Client(f"127.0.0.1:{port}") as client:
            for _ in range(100):
                client.predict("conv", np.zeros([1, 16, 16, 1], np.float32))
            before = in_use_mb()
            for rows in range(2, 162):
                client.predict("conv", np.zeros([rows, 16, 16, 1], np.float32))
            grown = in_use_mb() - before
        return {"switch": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "onednn": _pywrap_util_port.IsMklEnabled(),
                "grown_mb": grown}
"""


class TwoConvolutions(tf.Module):
    """Conv2D twice: ops that oneDNN runs, with a primitive per input shape."""

    def __init__(self):
        super().__init__()
        self.first = tf.Variable(tf.random.stateless_normal([3, 3, 1, 32], seed=[1, 2]))
        self.second = tf.Variable(tf.random.stateless_normal([3, 3, 32, 32], seed=[3, 4]))

    @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 1], tf.float32, name="images")])
    def serve(self, images):
        hidden = tf.nn.relu(tf.nn.conv2d(images, self.first, 1, "SAME"))
        return {"features": tf.nn.conv2d(hidden, self.second, 1, "SAME")}


def run_check(script: str, *args: str) -> str:
    """`script` in a fresh Python (its own heaps, glibc's defaults): its last line of output."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_started_server_maps_large_blocks_of_its_own_even_after_a_larger_one_was_freed(tmp_path):
    save_two_inputs(tmp_path / "two")
    assert run_check(CHECK, str(tmp_path / "two")) == '{"mapped": true}'


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_memory_in_a_threads_heap_goes_back_to_the_system_on_release():
    rss = json.loads(run_check(TRIM_CHECK))
    assert rss["before"] - rss["after"] > 150, rss  # of the ~200 MB freed (without the trim: 0)


def test_a_serving_process_sets_its_imports_aside_from_the_collector_but_not_its_versions(tmp_path):
    """TensorFlow's import leaves ~300,000 objects for every full collection to walk, each unload's
    included; they are exempted before the first load, so a version stays collectable."""
    save_two_inputs(tmp_path / "two")
    report = json.loads(run_check(serving_check(COLLECTOR_REPORT), "--port=0", "--model_name=two",
                                  f"--model_base_path={tmp_path / 'two'}"))
    assert report["frozen"] > 100_000, report  # 0 without the exemption
    assert report["collectable_versions"] == 1, report  # 0 had it come after the load


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallinfo2")
@pytest.mark.parametrize("chosen", [None, "1"])
def test_a_server_keeps_nothing_per_batch_size_a_client_sends_unless_onednn_is_chosen(tmp_path, monkeypatch, chosen):
    """oneDNN's ops cache a primitive per input shape in each thread (up to 1,024): every batch
    size a client picks would stay in the server's memory. `tfbig serve` runs without them
    unless TF_ENABLE_ONEDNN_OPTS says otherwise (TensorFlow's own default turns them on for
    CPUs with AVX-512 VNNI or BF16, AVX-VNNI or AMX, so on this test's machine it may not)."""
    module = TwoConvolutions()
    tf.saved_model.save(module, str(tmp_path / "conv" / "1"), signatures={"serving_default": module.serve})
    if chosen is None:
        monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    else:
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", chosen)
    report = json.loads(run_check(serving_check(KERNEL_CACHE_REPORT), f"--port={free_port()}",
                                  "--model_name=conv", f"--model_base_path={tmp_path / 'conv'}"))
    if chosen is None:
        assert report["switch"] == "0" and report["onednn"] is False, report
        assert report["grown_mb"] < 20, report  # 1.8-6.0 MB measured: request buffers, gRPC's pools
    else:  # the user's choice stands, and with it the cache this test measures
        assert report["switch"] == "1" and report["onednn"] is True, report
        assert report["grown_mb"] > 30, report  # 55-61 MB measured


def test_versions_load_on_the_managers_one_thread_whichever_thread_asks(tmp_path):
    base = tmp_path / "two"
    save_two_inputs(base)  # version 7
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name="two", base_path=str(base), model_platform="tensorflow")
    loaded_on = []  # (version, thread) of every load, recorded by its warmup
    manager = ModelManager(config, warmup=lambda servable: loaded_on.append(
        (servable.version, threading.current_thread().ident)))
    callers = []

    def ask(function, *args):  # as the poll thread or a ReloadConfig handler would, each on its own thread
        thread = threading.Thread(target=function, args=args)
        thread.start()
        thread.join()
        callers.append(thread.ident)

    ask(manager.reconcile)
    for version in (8, 9):
        shutil.copytree(base / str(version - 1), base / str(version))
        ask(manager.reconcile)
    shutil.copytree(base / "9", base / "10")
    ask(manager.apply_config, config)
    assert [version for version, _ in loaded_on] == [7, 8, 9, 10]
    assert len({thread for _, thread in loaded_on}) == 1
    assert not {thread for _, thread in loaded_on} & set(callers)
    manager.unload_all()
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("model-loader")]


def test_an_unloaded_version_leaves_nothing_for_the_collectors_next_pass(tmp_path):
    """A version's functions are graphs full of cycles: without a collection at unload, they
    (and what they hold) would stay until Python's collector next runs its oldest generation."""
    base = tmp_path / "two"
    save_two_inputs(base)  # version 7
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name="two", base_path=str(base), model_platform="tensorflow")
    manager = ModelManager(config)
    manager.reconcile()
    shutil.copytree(base / "7", base / "8")
    collecting = gc.isenabled()
    gc.disable()  # the collector's own passes must not be what frees it
    try:
        gc.collect()
        manager.reconcile()  # loads 8, unloads 7
        assert [s.version for s in manager.status(model_pb2.ModelSpec(name="two"))
                if s.state == State.AVAILABLE] == [8]
        assert gc.collect() < 100  # unreachable objects: 775 for this small model when left, 12 now
    finally:
        if collecting:
            gc.enable()
        manager.unload_all()
