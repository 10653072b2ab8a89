"""Checkpoint-on-SIGTERM for multi-worker runs.

When any worker of a MultiWorkerMirroredStrategy cluster gets SIGTERM (a
preempted VM, a Kubernetes eviction, `tfbig launch` stopping a cluster), TF's
PreemptionCheckpointHandler agrees with every worker on a step to stop after,
all of them save there and exit with status 42, and `tfbig launch
--max-restarts` or the cluster manager restarts the run from that step.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Callable

import tensorflow as tf


class PreemptionSaver:
    """Saves through `save(step)` at the first step boundary after a SIGTERM."""

    def __init__(self, strategy: tf.distribute.MultiWorkerMirroredStrategy,
                 save: Callable[[int], str]):
        # The handler restores its checkpoint when created. The Trainer has
        # restored already (skipping damaged checkpoints), so the handler gets
        # an empty checkpoint in scratch space; it saves through `save`, so
        # preemption checkpoints are ordinary ones named by their step.
        self._scratch = tempfile.mkdtemp(prefix="tfbig-preemption-")
        self._handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            strategy.cluster_resolver, tf.train.Checkpoint(), checkpoint_dir=self._scratch,
            termination_config=tf.distribute.experimental.TerminationConfig(save_fn=save),
        )

    def after_steps(self, step: int) -> None:
        """Call on every worker after each chunk, once `step` steps are done."""
        self._handler.save_checkpoint_if_preempted(step)

    def close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)


def preemption_saver(strategy: tf.distribute.Strategy,
                     save: Callable[[int], str]) -> PreemptionSaver | None:
    """A saver for multi-worker strategies; None where a plain SIGTERM is fine."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return PreemptionSaver(strategy, save)
    return None
