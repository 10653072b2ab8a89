"""Model compression with TF Model Optimization, inside tfbig's own training loop.

`compress_run(RUN_DIR, method=...)` (`tfbig compress`) turns a trained run
into a compressed run directory that `tfbig export` takes, plus a before/after
report: pruning, quantization-aware training, post-training quantization,
weight clustering and distillation. See `tfbig.compress.run`; the methods
themselves are `tfbig.train.compression`.
"""

from tfbig.config.schema import COMPRESS_METHODS as METHODS
from tfbig.compress.run import CompressResult, compress_run

__all__ = ["METHODS", "CompressResult", "compress_run"]
