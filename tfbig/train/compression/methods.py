"""The compression method a config names, as a `tfbig.train.compression.method.Method`.

`task` is the data's (`lm` or `classification`): distillation's loss depends on it.
"""

from __future__ import annotations

from tfbig.train.compression.method import Method, PostTraining
from tfbig.config import Config

PTQ_VARIANTS = {"ptq-dynamic": "dynamic_range", "ptq-float16": "float16", "ptq-int8": "int8"}


def make_method(config: Config, *, task: str, teacher=None) -> Method:
    """The method of `config.compress`; `teacher` (inputs -> logits) is for distill only.

    Imports are local: TF-MOT is only loaded when a compressed run is built.
    """
    compress = config.compress
    if compress.method == "prune":
        from tfbig.train.compression.prune import PruneMethod

        return PruneMethod(compress.prune, steps=compress.steps)
    if compress.method == "qat":
        from tfbig.train.compression.quantize import QATMethod

        return QATMethod(compress.qat)
    if compress.method == "cluster":
        from tfbig.train.compression.cluster import ClusterMethod

        return ClusterMethod(compress.cluster)
    if compress.method == "distill":
        from tfbig.train.compression.distill import DistillMethod

        return DistillMethod(compress.distill, task=task, teacher=teacher)
    return PostTraining()  # none, and post-training quantization (see tfbig.compress.run)
