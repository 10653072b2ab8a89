"""`RUN_DIR/pipeline.json`: what each stage of `tfbig pipeline` did, and when.

The record a re-run consults to skip finished stages (each stage still checks
that its outputs are there and valid), and what the report shows as the
pipeline table. Rewritten atomically after every stage, so a run killed
mid-stage leaves the record of every stage before it.
"""

from __future__ import annotations

import datetime
import json
import os

from tfbig.files import write_json
from tfbig.rundir import RunDir

FORMAT = "tfbig-pipeline/1"
STAGES = ("train", "evaluate", "compress", "export", "validate", "canary", "serve", "promote", "report")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class PipelineState:
    def __init__(self, run_dir: str, *, model_name: str, model_base_path: str):
        self.path = RunDir(run_dir).pipeline
        self.data = self._read()
        self.data.update(format=FORMAT, model_name=model_name, model_base_path=model_base_path,
                         order=list(STAGES))
        self.data.setdefault("stages", {})

    def _read(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):  # a damaged record: the stages re-check their outputs
            return {}

    def summary(self, stage: str) -> dict:
        """The summary of `stage`'s last successful run, or {}."""
        entry = self.data["stages"].get(stage, {})
        return entry.get("summary", {}) if entry.get("status") in ("done", "skipped") else {}

    def record(self, stage: str, *, status: str, started: str, seconds: float,
               summary: dict | None = None, error: str | None = None) -> None:
        entry = {"status": status, "started": started, "finished": now(),
                 "seconds": round(seconds, 3), "summary": summary or {}}
        if error:
            entry["error"] = error
        self.data["stages"][stage] = entry
        self.save()

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_json(self.path, self.data, default=str)
