"""Where training metrics go: metrics.jsonl, TensorBoard and a progress bar.

`metrics.jsonl` is the machine-readable record (one JSON object per line, each
with `step`); TensorBoard gets the same scalars under `logs/train` and
`logs/eval`; the progress bar is for the person watching.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time

import tensorflow as tf
from tqdm.auto import tqdm

from tfbig.rundir import RunDir


class RunLog:
    """Writes one run's metrics; reopening a run continues its files."""

    def __init__(self, run_dir: str, *, total_steps: int, start_step: int,
                 progress_bar: bool, unit: str):
        self.path = RunDir(run_dir).metrics
        self._trim_after(start_step)
        logs = RunDir(run_dir).logs
        self._writers = {
            "train": tf.summary.create_file_writer(os.path.join(logs, "train")),
            "eval": tf.summary.create_file_writer(os.path.join(logs, "eval")),
        }
        self._unit = unit
        self._bar = tqdm(
            total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
            disable=not progress_bar, desc="train",
        )

    def _trim_after(self, step: int) -> None:
        """Drop lines logged after the checkpoint we resume from.

        A run killed between a log line and the next checkpoint repeats those
        steps on resume; trimming keeps the metrics a single continuous series.
        """
        if not os.path.exists(self.path):
            return
        with open(self.path, encoding="utf-8") as f:
            lines = [line for line in f if line.strip()]
        kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
        if len(kept) == len(lines):
            return
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), prefix=".metrics-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(kept)
        os.replace(tmp, self.path)

    def advance(self, steps: int, *, loss: float, throughput: float) -> None:
        self._bar.update(steps)
        self._bar.set_postfix(loss=f"{loss:.4f}", **{self._unit: f"{throughput:,.0f}"})

    def write(self, step: int, metrics: dict, *, kind: str) -> None:
        """Append one record; `kind` is "train" or "eval" (keys already prefixed)."""
        record = {"step": step, "time": round(time.time(), 3)}
        record.update({k: _json_number(v) for k, v in metrics.items()})
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        with self._writers[kind].as_default(step=step):
            for name, value in metrics.items():
                tf.summary.scalar(name.removeprefix("eval_"), value)
        if kind == "eval":
            shown = ", ".join(f"{k}={float(v):.4g}" for k, v in metrics.items())
            self._bar.write(f"step {step}: {shown}")

    def close(self) -> None:
        self._bar.close()
        for writer in self._writers.values():
            writer.flush()
            writer.close()


def _json_number(value) -> float | None:
    """A float for JSON; NaN and infinities (not valid JSON) become null."""
    value = float(value)
    return value if math.isfinite(value) else None


def read_metrics(run_dir: str) -> list[dict]:
    """All records of a run's metrics.jsonl, in order."""
    with open(RunDir(run_dir).metrics, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
