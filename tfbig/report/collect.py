"""Everything a run directory says about itself, read into one JSON-able dict.

A report is most wanted when something went wrong, so only `config.yaml` is
required: every other file may be missing (that stage did not run) or
malformed (a run killed mid-write); a bad file or line becomes a note in the
report, never a traceback. Nothing here imports TensorFlow, so `tfbig report`
answers in about a second.
"""

from __future__ import annotations

import json
import os

import yaml

from tfbig.atoi import simple_atoi
from tfbig.errors import UsageError
from tfbig.rundir import RunDir

REPORT_FORMAT = "tfbig-report/1"
MANIFEST = os.path.join("assets.extra", "tfbig_manifest.json")


class ReportError(UsageError, ValueError):
    """The directory asked about is not a tfbig run directory."""


def collect_run(run_dir: str) -> dict:
    """Every section of `run_dir`'s report; a section is None when its stage did not run."""
    run_dir = os.path.abspath(run_dir)
    run = RunDir(run_dir)
    config_path = run.config
    if not os.path.isfile(config_path):
        raise ReportError(
            f"{run_dir} is not a run directory: it has no {RunDir.config.name}. Make one with "
            f"`tfbig train CONFIG --output-dir {run_dir}` or `tfbig pipeline CONFIG`.")
    notes: list[str] = []
    with open(config_path, encoding="utf-8") as f:
        config_text = f.read()
    train, evals = _read_metrics(run.metrics, notes)
    pipeline = _read_json(run.pipeline, notes)
    summaries = _summaries(pipeline)
    validation = summaries.get("validate", {})
    return {
        "format": REPORT_FORMAT,
        "run_dir": run_dir,
        "name": os.path.basename(run_dir),
        "config": _parse_config(config_text, notes),
        "config_text": config_text,
        "train": train,
        "eval": evals,
        "environment": _read_json(run.environment, notes),
        "pipeline": pipeline,
        "compression": _compression(run_dir, summaries.get("compress", {}), notes),
        "export": _export(run_dir, summaries.get("export", {}), notes),
        "validation": validation if validation.get("checks") else None,
        "serving": _read_json(run.serving, notes),
        "notes": notes,
    }


def _parse_config(text: str, notes: list[str]) -> dict:
    """The config as a dict; {} and a note if not a YAML mapping, so the rest still renders."""
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as e:
        notes.append(f"{RunDir.config.name}: not valid YAML ({_first_line(e)})")
        return {}
    if not isinstance(config, dict):
        notes.append(f"{RunDir.config.name}: not a YAML mapping")
        return {}
    return config


def _summaries(pipeline: dict | None) -> dict[str, dict]:
    """Each stage's summary by stage name, {} for a stage whose summary is not an object."""
    stages = (pipeline or {}).get("stages")
    if not isinstance(stages, dict):
        return {}
    return {name: stage["summary"] if isinstance(stage, dict)
            and isinstance(stage.get("summary"), dict) else {} for name, stage in stages.items()}


def _read_metrics(path: str, notes: list[str]) -> tuple[list[dict], list[dict]]:
    """(train records, eval records) of a metrics.jsonl, skipping lines that are not records.

    An eval record is one with an `eval_*` key (how RunLog writes them).
    """
    train: list[dict] = []
    evals: list[dict] = []
    if not os.path.isfile(path):
        return train, evals
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("step"), (int, float)):
                notes.append(f"{os.path.basename(path)} line {number}: not a metrics record, "
                             f"skipped")
                continue
            (evals if any(k.startswith("eval_") for k in record) else train).append(record)
    return train, evals


def _read_json(path: str, notes: list[str]) -> dict | None:
    """The JSON object in `path`; None when absent, or (with a note) when not a JSON object."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (ValueError, OSError) as e:
        notes.append(f"{path}: not readable JSON ({_first_line(e)}), skipped")
        return None
    if not isinstance(value, dict):
        notes.append(f"{path}: not a JSON object, skipped")
        return None
    return value


def _compression(run_dir: str, summary: dict, notes: list[str]) -> dict | None:
    """The compressed run's report.json, its plot and its final eval metrics.

    The pipeline names the compressed run; a plain `tfbig compress` run is
    found at the conventional RUN_DIR/compressed.
    """
    directory = _resolve(run_dir, summary.get("output_dir") or RunDir(run_dir).compressed)
    compressed = RunDir(directory)
    report = _read_json(compressed.compression_json, notes)
    if report is None:
        return None
    png = compressed.compression_png
    _, evals = _read_metrics(compressed.metrics, notes)
    return {"dir": directory, "report": report, "png": png if os.path.isfile(png) else None,
            "final_eval": _without_time(evals[-1]) if evals else None}


def _export(run_dir: str, summary: dict, notes: list[str]) -> dict | None:
    """The exported version's manifest and the bytes it occupies on disk.

    The pipeline names the version; a plain `tfbig export RUN_DIR` run is
    found as the highest version under RUN_DIR/export.
    """
    path = summary.get("path")
    directory = (_resolve(run_dir, path) if path
                 else _latest_version(RunDir(run_dir).export))
    if directory is None or not os.path.isdir(directory):
        return None
    manifest = _read_json(os.path.join(directory, MANIFEST), notes) or {}
    artifacts = manifest.get("artifacts") or {}
    return {
        "path": directory,
        "version": summary.get("version", simple_atoi(os.path.basename(directory))),
        "manifest": manifest,
        "total_bytes": _tree_bytes(directory),
        "artifact_bytes": {kind: _tree_bytes(os.path.join(directory, relative))
                           for kind, relative in artifacts.items()},
    }


def _latest_version(base: str) -> str | None:
    names = os.listdir(base) if os.path.isdir(base) else []
    versions = {version: name for name in names if (version := simple_atoi(name)) is not None}
    return os.path.join(base, versions[max(versions)]) if versions else None


def _tree_bytes(path: str) -> int | None:
    """Bytes of a file, or of every file under a directory; None when it does not exist."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    if not os.path.isdir(path):
        return None
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def _resolve(run_dir: str, path: str) -> str:
    """Paths in pipeline.json are absolute or relative to the run directory."""
    return path if os.path.isabs(path) else os.path.join(run_dir, path)


def _without_time(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "time"}


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
