"""Training: the Orbit-style custom loop, optimizers, checkpoints and run logs.

The compression methods, which wrap a model for fine-tuning in this loop, are
`tfbig.train.compression`.
"""

from tfbig.train.logging import read_metrics
from tfbig.train.optim import WarmupDecay, make_optimizer, make_schedule
from tfbig.train.run import train
from tfbig.train.trainer import Trainer, TrainingDivergedError, TrainResult

__all__ = [
    "read_metrics", "WarmupDecay", "make_optimizer", "make_schedule",
    "train", "Trainer", "TrainingDivergedError", "TrainResult",
]
