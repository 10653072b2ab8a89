"""The server and glibc's allocator: large request buffers kept out of the heaps, freed memory given back.

glibc's malloc serves a block of 128 KiB or more with its own mmap, returned to
the system when freed, but each time such a block is freed it raises that
threshold to the block's size (up to 32 MiB): from then on blocks below it come
from the heap of the allocating thread's arena. A server's large blocks are
request-sized (bodies, decoded inputs, outputs) and its requests run on many
threads, so with the threshold raised they land in up to eight arenas per core,
each of which keeps the memory it grew to, broken up by the small long-lived
blocks allocated between them. `scripts/soak_serve.py` saw RSS rise 11-15 MB a
minute for as long as it ran: the memory glibc held free (mallinfo2's
`fordblks`) grew by hundreds of MB while the memory in use and the Python heap
stayed flat, and malformed traffic alone, with no version loaded or unloaded,
was enough (+16 MB/min; valid traffic alone +1.6). Setting
the threshold once, as `mallopt(M_MMAP_THRESHOLD)` does, turns the dynamic
adjustment off, so every large block keeps its own mapping and goes back to the
system when freed.

`MALLOC_MMAP_THRESHOLD_` in the environment (glibc's own tunable) is left to
decide; elsewhere than glibc nothing is done.

What a version's unload frees is different: the functions traced for its
signatures are graphs of objects with cycles, so they go only when Python's
collector next runs its oldest generation, and what they leave free in the
heaps is not returned on its own. `release_free_memory` gives both back at
once (the model manager calls it after each unload), as TF Serving frees a
servable when it unloads it.

A full collection walks every object the collector tracks, and the server's
imports (TensorFlow's above all) leave some 308,000 of them, alive for as long
as the process is: serving the digits CNN and a small model, one pass took
195-230 ms on an idle 2-core VM, every thread waiting on the GIL meanwhile. A
process that only serves (`tfbig serve`) sets what its imports made aside once
(`exempt_startup_objects`), and each pass walks what came after: 21,000
objects, 2-4 ms.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os

log = logging.getLogger("tfbig.serving")

M_MMAP_THRESHOLD = -3  # malloc.h
# glibc's default, kept fixed: blocks this size and over are mapped on their own.
MMAP_THRESHOLD_BYTES = 128 * 1024


def _glibc(name: str):
    """glibc's function `name`, or None elsewhere (macOS, musl)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes; True when it was set here."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, threshold) != 1:
        log.warning("mallopt(M_MMAP_THRESHOLD, %d) failed; large buffers may stay in the heap", threshold)
        return False
    return True


def release_free_memory() -> None:
    """Free what only Python's cycle collector would free, then hand the heaps' free pages
    back to the system (`malloc_trim` goes through every arena, not only the top of each)."""
    gc.collect()
    malloc_trim = _glibc("malloc_trim")
    if malloc_trim is not None:
        malloc_trim.argtypes, malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
        malloc_trim(0)  # ctypes lets go of the GIL while glibc walks the arenas


def exempt_startup_objects() -> None:
    """Put every object alive now out of the collector's reach for good (`gc.freeze`), so
    that its passes walk only what comes after. For a process that serves and nothing else,
    before it loads a model: cyclic garbage among the exempted objects is never collected,
    and a version loaded before the call could not be freed by its unload."""
    gc.collect()
    gc.freeze()
