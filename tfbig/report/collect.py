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
from tfbig.summaries import (CompressSummary, ExportSummary, PrepareSummary, RecordError, Summary,
                             ValidateSummary, read_summary)

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
    summaries = _summaries(pipeline, notes)
    config = _parse_config(config_text, notes)
    validation = summaries.get(ValidateSummary.stage)
    return {
        "format": REPORT_FORMAT,
        "run_dir": run_dir,
        "name": os.path.basename(run_dir),
        "config": config,
        "config_text": config_text,
        "train": train,
        "eval": evals,
        "environment": _read_json(run.environment, notes),
        "pipeline": pipeline,
        "stages": _stages(pipeline, summaries),
        "data": _data(config, summaries.get(PrepareSummary.stage), notes),
        "compression": _compression(run_dir, summaries.get(CompressSummary.stage), notes),
        "export": _export(run_dir, summaries.get(ExportSummary.stage), notes),
        "validation": validation.to_json() if validation and validation.checks else None,
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


def _summaries(pipeline: dict | None, notes: list[str]) -> dict[str, Summary]:
    """The typed summary of each stage that finished (done or skipped), by stage name; a
    summary this tfbig cannot read (another version wrote it, or it is damaged) is a note."""
    summaries = {}
    for name, stage in _stage_entries(pipeline).items():
        if stage.get("status") in ("done", "skipped"):
            try:
                summaries[name] = read_summary(name, stage.get("summary"))
            except RecordError as error:
                notes.append(f"{RunDir.pipeline.name}: {error}, skipped")
    return summaries


def _stage_entries(pipeline: dict | None) -> dict[str, dict]:
    stages = (pipeline or {}).get("stages")
    if not isinstance(stages, dict):
        return {}
    return {str(name): stage for name, stage in stages.items() if isinstance(stage, dict)}


def _stages(pipeline: dict | None, summaries: dict[str, Summary]) -> list[dict] | None:
    """The pipeline table: every stage in the pipeline's order (one not recorded is pending),
    each with its summary's few shown fields."""
    if pipeline is None:
        return None
    entries = _stage_entries(pipeline)
    order = [name for name in pipeline.get("order") or [] if isinstance(name, str)]
    return [{"stage": name, "status": entries.get(name, {}).get("status", "pending"),
             "seconds": entries.get(name, {}).get("seconds"),
             "summary": summaries[name].shown() if name in summaries else {},
             "error": entries.get(name, {}).get("error")}
            for name in order + [name for name in entries if name not in order]]


def _data(config: dict, prepared: PrepareSummary | None, notes: list[str]) -> dict | None:
    """A token dataset's tokenizer and splits, from the prepare stage's summary, else from the
    spec.json of the directory the config names (made by `tfbig data prepare`)."""
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    paths = data.get("paths")
    if data.get("name") != "tokens" or not (prepared and prepared.dataset or isinstance(paths, list) and paths):
        return None
    directory = prepared.dataset if prepared and prepared.dataset else str(paths[0])
    spec = _read_json(os.path.join(directory, "spec.json"), notes) or {}
    splits = spec.get("splits") if isinstance(spec.get("splits"), dict) else {}
    tokenizer = spec.get("tokenizer") or (prepared.tokenizer if prepared else None)
    if not isinstance(tokenizer, dict):
        notes.append(f"{directory}: no tokenizer recorded (no readable spec.json)")
        return None
    return {"dataset": directory, "tokenizer": tokenizer,
            "splits": {name: {key: split.get(key) for key in ("documents", "tokens", "bytes")}
                       for name, split in splits.items() if isinstance(split, dict)},
            "sources": len(spec.get("sources") or [])}


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


def _compression(run_dir: str, summary: CompressSummary | None, notes: list[str]) -> dict | None:
    """The compressed run's report.json, its plot and its final eval metrics.

    The pipeline names the compressed run; a plain `tfbig compress` run is
    found at the conventional RUN_DIR/compressed.
    """
    directory = _resolve(run_dir, summary and summary.output_dir or RunDir(run_dir).compressed)
    compressed = RunDir(directory)
    report = _read_json(compressed.compression_json, notes)
    if report is None:
        return None
    png = compressed.compression_png
    _, evals = _read_metrics(compressed.metrics, notes)
    return {"dir": directory, "report": report, "png": png if os.path.isfile(png) else None,
            "final_eval": _without_time(evals[-1]) if evals else None}


def _export(run_dir: str, summary: ExportSummary | None, notes: list[str]) -> dict | None:
    """The exported version's manifest and the bytes it occupies on disk.

    The pipeline names the version; a plain `tfbig export RUN_DIR` run is
    found as the highest version under RUN_DIR/export.
    """
    directory = (_resolve(run_dir, summary.path) if summary
                 else _latest_version(RunDir(run_dir).export))
    if directory is None or not os.path.isdir(directory):
        return None
    manifest = _read_json(os.path.join(directory, MANIFEST), notes) or {}
    artifacts = manifest.get("artifacts") or {}
    return {
        "path": directory,
        "version": summary.version if summary else simple_atoi(os.path.basename(directory)),
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
