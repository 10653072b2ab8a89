"""`RUN_DIR/pipeline.json`: what each stage of `tfbig pipeline` did, and when.

The record a re-run consults to skip finished stages (each stage still checks
that its outputs are there and valid), and what the report shows as the
pipeline table. Rewritten atomically after every stage, so a run killed
mid-stage leaves the record of every stage before it. Each stage's summary is
one of `tfbig.summaries`' classes, stored as its JSON.
"""

from __future__ import annotations

import datetime
import json
import os

from tfbig.files import write_json
from tfbig.rundir import RunDir
from tfbig.summaries import RecordError, Summary

FORMAT = "tfbig-pipeline/1"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class PipelineState:
    def __init__(self, run_dir: str, *, model_name: str, model_base_path: str, order: list[str]):
        self.path = RunDir(run_dir).pipeline
        self.data = self._read()
        self.data.update(format=FORMAT, model_name=model_name, model_base_path=model_base_path,
                         order=list(order))
        if not isinstance(self.data.get("stages"), dict):
            self.data["stages"] = {}

    def _read(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except (FileNotFoundError, ValueError):  # a damaged record: the stages re-check their outputs
            return {}
        return data if isinstance(data, dict) else {}

    def summary(self, kind: type[Summary]) -> Summary | None:
        """The summary of `kind.stage`'s last successful run; None if there is none, or if it
        was written with other fields (another tfbig version): the stage re-checks its outputs."""
        entry = self.data["stages"].get(kind.stage)
        if not isinstance(entry, dict) or entry.get("status") not in ("done", "skipped"):
            return None
        try:
            return kind.from_json(entry.get("summary"))
        except RecordError:
            return None

    def record(self, stage: str, *, status: str, started: str, seconds: float,
               summary: Summary | None = None, error: str | None = None) -> None:
        entry = {"status": status, "started": started, "finished": now(),
                 "seconds": round(seconds, 3), "summary": summary.to_json() if summary else {}}
        if error:
            entry["error"] = error
        self.data["stages"][stage] = entry
        self.save()

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_json(self.path, self.data, default=str)
