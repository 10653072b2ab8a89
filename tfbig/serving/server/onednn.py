"""oneDNN's kernels in a server: each thread caches a primitive for every input shape it meets.

TensorFlow's Linux builds run Conv2D, BatchMatMul and their relatives through
oneDNN on CPUs with AVX-512 VNNI or BF16, AVX-VNNI or AMX (most server CPUs of
the last years), unless `TF_ENABLE_ONEDNN_OPTS=0`; and its oneDNN ops keep each
thread's primitives, scratch buffers included, in an LRU cache of 1,024
entries keyed by the inputs' dims (`MklPrimitiveFactory` in TensorFlow's
mkl_util.h). A server's clients choose those dims: every batch size not seen
before is a new entry. With oneDNN on (`TF_ENABLE_ONEDNN_OPTS=1` on an AVX2
VM), running the digits CNN on batch sizes 2 to 201, requests of 0.5 to 51 KB,
left 200 MB more in use, kept for good; sizes 2 to 1,501 left 394 MB,
levelling off after some 1,250 (one thread's cache); with it off the same
1,500 sizes left 0.2 MB. TensorFlow's own (Eigen) kernels also served the CNN
faster (`scripts/bench_serve.py`, one image per request, no batching: 3.2x the
requests per second over gRPC at 1 concurrent request, 4.0x at 32); a batching
GPT server was the exception (0.61x over gRPC, 0.77x over REST at 32).

So `tfbig serve` runs the embedded server on TensorFlow's own kernels unless
the environment chooses (`TF_ENABLE_ONEDNN_OPTS=1` brings oneDNN back, with
its caches: then bound the batch sizes a client can make, e.g. with batching's
`allowed_batch_sizes`). TensorFlow reads the switch once, as it is imported,
so this has to come first.
"""

from __future__ import annotations

import os
import sys

SWITCH = "TF_ENABLE_ONEDNN_OPTS"


def default_to_eigen_kernels() -> None:
    """Turn oneDNN off for this process unless the environment already chooses. Too late once
    TensorFlow is imported: then nothing is changed."""
    if SWITCH not in os.environ and "tensorflow" not in sys.modules:
        os.environ[SWITCH] = "0"
