"""The embedded server's memory: large, short-lived buffers must not pile up in the heap.

glibc raises its mmap threshold each time a mapped block is freed, after which
request-sized blocks come from the heaps of the many threads that serve
requests and stay there (see tfbig/serving/server/allocator.py). The check runs
in a fresh interpreter: the allocator's settings are the whole process's.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from serving_models import save_two_inputs

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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_started_server_maps_large_blocks_of_its_own_even_after_a_larger_one_was_freed(tmp_path):
    save_two_inputs(tmp_path / "two")
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, "-c", CHECK, str(tmp_path / "two")], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == '{"mapped": true}'
