"""The stages of `tfbig pipeline`, in order: each a `Stage` with its name, its
up-to-date check, its action and the typed summary both return.

`up_to_date(ctx)` returns the stage's summary when its outputs exist and are
still valid for the current inputs (the dataset's sources, the latest
checkpoint, the exported version, the labels), else None; `run(ctx)` does the
work and returns the summary. The summaries (`tfbig.summaries`) are what
pipeline.json stores and the report reads. Each stage reads only files the
stages before it wrote, so any stage can be re-run alone after an interruption.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Callable

from tfbig.config import Config
from tfbig.errors import RunError
from tfbig.files import write_atomic, write_json
from tfbig.pipeline.context import PipelineContext, checkpoint_step, latest_checkpoint
from tfbig.pipeline.smoke import example_inputs, smoke_query
from tfbig.rundir import RunDir
from tfbig.summaries import (CanarySummary, CompressSummary, EvaluateSummary, ExportSummary,
                             PrepareSummary, PromoteSummary, ReportSummary, ServeSummary, Summary,
                             TrainSummary, ValidateSummary)

# How often the pipeline's server re-reads models.config (label moves are also pushed to it).
CONFIG_POLL_S = 2


class GateError(RunError, ValueError):
    """The model missed a quality gate of `pipeline:`; nothing is exported."""


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage; its name is its summary's, so pipeline.json and the report agree on it."""

    summary: type[Summary]
    up_to_date: Callable[[PipelineContext], Summary | None]
    run: Callable[[PipelineContext], Summary]

    @property
    def name(self) -> str:
        return self.summary.stage


# --------------------------------------------------------------------- prepare


def _prepare_options(ctx: PipelineContext) -> dict:
    """`prepare_dataset`'s options from `data.prepare` (0 means its default)."""
    prepare = ctx.config.data.prepare
    return {"tokenizer": prepare.tokenizer, "vocab_size": prepare.vocab_size or None,
            "special_tokens": tuple(prepare.special_tokens), "eval_fraction": prepare.eval_fraction,
            "text_field": prepare.text_field, "sample_bytes": prepare.sample_bytes}


def prepare_up_to_date(ctx: PipelineContext) -> PrepareSummary | None:
    from tfbig.data.prepare import prepared_spec

    if ctx.config.data.prepare is None:
        return PrepareSummary()
    spec = prepared_spec(ctx.config.data.prepare.sources, ctx.dataset, **_prepare_options(ctx))
    return _prepare_summary(ctx.dataset, spec) if spec else None


def run_prepare(ctx: PipelineContext) -> PrepareSummary:
    """`tfbig data prepare` of `data.prepare.sources` into the dataset directory: resumes an
    interrupted preparation, replaces a dataset made from other sources or options."""
    from tfbig.data.prepare import prepare_dataset

    prepare = ctx.config.data.prepare
    spec = prepare_dataset(prepare.sources, ctx.dataset, **_prepare_options(ctx),
                           workers=prepare.workers or None, quiet=True, replace=True)
    return _prepare_summary(ctx.dataset, spec)


def _prepare_summary(dataset: str, spec: dict) -> PrepareSummary:
    splits = spec["splits"]
    return PrepareSummary(dataset=dataset, tokenizer=spec["tokenizer"], train_tokens=splits["train"]["tokens"],
                          eval_tokens=splits["eval"]["tokens"], eval_bytes=splits["eval"]["bytes"])


# ----------------------------------------------------------------------- train


def train_up_to_date(ctx: PipelineContext) -> TrainSummary | None:
    checkpoint = latest_checkpoint(ctx.run_dir)
    if checkpoint_step(checkpoint) >= ctx.config.train.steps:
        return TrainSummary(checkpoint=checkpoint, step=checkpoint_step(checkpoint))
    return None


def run_train(ctx: PipelineContext) -> TrainSummary:
    from tfbig.train import train

    result = train(ctx.train_config)  # resumes an interrupted run
    return TrainSummary(checkpoint=result.checkpoint, step=result.step, metrics=result.eval_metrics)


# -------------------------------------------------------------------- evaluate


def evaluate_up_to_date(ctx: PipelineContext) -> EvaluateSummary | None:
    done = ctx.state.summary(EvaluateSummary)
    if done and done.checkpoint == latest_checkpoint(ctx.run_dir):
        check_gates(ctx.config, done.metrics)
        return done
    return None


def run_evaluate(ctx: PipelineContext) -> EvaluateSummary:
    """A full pass over the eval split with the latest checkpoint, then the quality gates."""
    from tfbig.models import precision_policy
    from tfbig.train.run import build_trainer

    with precision_policy(ctx.config.train.precision):
        trainer = build_trainer(ctx.config, ctx.strategy)
        checkpoint = trainer.checkpointer.restore_latest()
        metrics = trainer.evaluate()
    check_gates(ctx.config, metrics)
    return EvaluateSummary(checkpoint=checkpoint, step=int(trainer.step.numpy()),
                           replicas=ctx.strategy.num_replicas_in_sync, metrics=metrics)


def check_gates(config: Config, metrics: dict) -> None:
    gates = config.pipeline
    accuracy, perplexity = metrics.get("eval_accuracy"), metrics.get("eval_perplexity")
    if gates.min_eval_accuracy and accuracy is not None and accuracy < gates.min_eval_accuracy:
        raise GateError(f"eval_accuracy {accuracy:.4f} is below pipeline.min_eval_accuracy "
                        f"{gates.min_eval_accuracy:.4f}")
    if gates.max_eval_perplexity and perplexity is not None and perplexity > gates.max_eval_perplexity:
        raise GateError(f"eval_perplexity {perplexity:.4f} is above pipeline.max_eval_perplexity "
                        f"{gates.max_eval_perplexity:.4f}")


# -------------------------------------------------------------------- compress


def compress_up_to_date(ctx: PipelineContext) -> CompressSummary | None:
    if not ctx.compressed:
        return CompressSummary(method="none")
    done = ctx.state.summary(CompressSummary)
    report = RunDir(ctx.export_source).compression_json
    if done and done.source_checkpoint == latest_checkpoint(ctx.run_dir) and os.path.exists(report):
        return done
    return None


def run_compress(ctx: PipelineContext) -> CompressSummary:
    """Compress the latest checkpoint: resume an interrupted fine-tuning of the same
    checkpoint, start afresh when training has moved on (a longer `train.steps`)."""
    from tfbig.compress import compress_run

    source = latest_checkpoint(ctx.run_dir)
    marker = RunDir(ctx.export_source).compressed_from
    if os.path.isdir(ctx.export_source) and _read_text(marker) != source:
        shutil.rmtree(ctx.export_source)
    os.makedirs(ctx.export_source, exist_ok=True)
    write_atomic(marker, source)
    result = compress_run(ctx.run_dir, compress=ctx.config.compress, output_dir=ctx.export_source)
    check_gates(ctx.config, {k: v for k, v in result.after.items() if k.startswith("eval_")})
    return CompressSummary(method=result.method, output_dir=result.output_dir, source_checkpoint=source,
                           before=result.before, after=result.after)


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


# ---------------------------------------------------------------------- export


def export_up_to_date(ctx: PipelineContext) -> ExportSummary | None:
    from tfbig.export import read_manifest

    done = ctx.state.summary(ExportSummary)
    # Both ends of the chain: a compressed run made afresh reuses its checkpoint names.
    if (done and os.path.isdir(os.path.join(ctx.base_path, str(done.version)))
            and done.trained_checkpoint == latest_checkpoint(ctx.run_dir)):
        manifest = read_manifest(os.path.join(ctx.base_path, str(done.version))) or {}
        if manifest.get("training", {}).get("checkpoint") == latest_checkpoint(ctx.export_source):
            return done
    return None


def run_export(ctx: PipelineContext) -> ExportSummary:
    from tfbig.export import export_run

    options = ctx.config.pipeline
    result = export_run(ctx.export_source, ctx.base_path, onnx=options.onnx, tflite=tuple(options.tflite),
                        sign_key=options.sign_key or None)
    return ExportSummary(version=result.version, path=result.path, signatures=list(result.signatures),
                         artifacts=result.artifacts, trained_checkpoint=latest_checkpoint(ctx.run_dir))


# -------------------------------------------------------------------- validate


def validate_up_to_date(ctx: PipelineContext) -> ValidateSummary | None:
    validation = ctx.registry.validation(ctx.version)
    return _validation_summary(validation) if validation and validation["passed"] else None


def run_validate(ctx: PipelineContext) -> ValidateSummary:
    from tfbig.export.signing import load_private_key
    from tfbig.lifecycle import LifecycleError, validate_version

    sign_key = ctx.config.pipeline.sign_key
    result = validate_version(ctx.registry, ctx.version, engine=ctx.config.pipeline.engine,
                              log_path=ctx.run.validate_log,
                              verify_key=load_private_key(sign_key).public_key() if sign_key else None)
    if not result.passed:
        raise LifecycleError(f"version {ctx.version} failed validation, so it is not promoted: "
                             f"{'; '.join(result.problems)}")
    return _validation_summary(result.as_record())


def _validation_summary(record: dict) -> ValidateSummary:
    return ValidateSummary(version=record["version"], engine=record["engine"], checks=list(record["checks"]),
                           load_seconds=record["load_seconds"], note=record.get("note", ""))


# ---------------------------------------------------------------------- labels


def _has_label(ctx: PipelineContext, label: str) -> dict | None:
    """The labels, when `label` (or, for canary, stable) is on this version already."""
    labels = ctx.registry.labels()
    if labels.get(label) == ctx.version or (label == "canary" and labels.get("stable") == ctx.version):
        return labels
    return None


def canary_up_to_date(ctx: PipelineContext) -> CanarySummary | None:
    labels = _has_label(ctx, "canary")
    return CanarySummary(labels=labels) if labels is not None else None


def run_canary(ctx: PipelineContext) -> CanarySummary:
    return CanarySummary(labels=ctx.registry.promote(ctx.version, "canary"))


def promote_up_to_date(ctx: PipelineContext) -> PromoteSummary | None:
    labels = _has_label(ctx, "stable")
    return PromoteSummary(labels=labels) if labels is not None else None


def run_promote(ctx: PipelineContext) -> PromoteSummary:
    """`stable` moves to the version the canary served; on the live server without a gap."""
    registry = ctx.registry
    server = ctx.server.grpc_target if ctx.server else None
    labels = registry.promote(ctx.version, "stable", server=server, credentials=ctx.credentials)
    removed = registry.prune_old(ctx.config.pipeline.keep_versions) if ctx.config.pipeline.keep_versions else []
    return PromoteSummary(labels=labels, removed_versions=list(removed))


# ----------------------------------------------------------------------- serve


def serve_command(ctx: PipelineContext) -> list[str]:
    """The `tfbig serve` flags that serve this model base path with its labels."""
    flags = [f"--model_config_file={ctx.registry.config_file}",
             f"--model_config_file_poll_wait_seconds={CONFIG_POLL_S}"]
    if ctx.config.pipeline.auth_token_file:
        flags.append(f"--auth_token_file={os.path.abspath(ctx.config.pipeline.auth_token_file)}")
    if ctx.config.pipeline.sign_key and ctx.config.pipeline.engine != "tensorflow_model_server":
        # The binary checks no signatures: with it, validation's check is the only one.
        flags.append(f"--verify_key={os.path.abspath(write_verify_key(ctx))}")
    return flags


def write_verify_key(ctx: PipelineContext) -> str:
    """The public half of `pipeline.sign_key`, written into the run for the server."""
    from tfbig.export.signing import load_private_key, public_pem
    from tfbig.files import write_atomic

    return write_atomic(ctx.run.verify_key, public_pem(load_private_key(ctx.config.pipeline.sign_key,
                                                                        "pipeline.sign_key")))


def serve_up_to_date(ctx: PipelineContext) -> ServeSummary | None:
    try:
        with open(ctx.run.serving, encoding="utf-8") as f:
            measured = json.load(f)
        if measured["version"] == ctx.version:
            return ServeSummary(version=measured["version"], smoke=measured["smoke"]["response"])
    except (OSError, ValueError, KeyError, TypeError):  # not measured, or not by this tfbig
        pass
    return None


def start_server(ctx: PipelineContext) -> None:
    from tfbig.serving.process import ServerProcess

    ctx.server = ServerProcess(serve_command(ctx), model_name=ctx.model_name,
                               log_path=ctx.run.serve_log,
                               engine=ctx.config.pipeline.engine, credentials=ctx.credentials).start()


def run_serve(ctx: PipelineContext) -> ServeSummary:
    """Start the server on the labels, query the canary, measure latency; the server stays up."""
    start_server(ctx)
    inputs = example_inputs(os.path.join(ctx.base_path, str(ctx.version)))
    smoke = smoke_query(ctx.server.grpc_target, ctx.model_name, gpt=ctx.config.model.name == "gpt",
                        inputs=inputs, credentials=ctx.credentials)
    measured = {"version": ctx.version, "model": ctx.model_name, "label": "canary",
                "engine": _engine_name(ctx), "target": ctx.server.grpc_target,
                "smoke": smoke, "latency": measure(ctx, inputs)}
    write_json(ctx.run.serving, measured)
    return ServeSummary(version=ctx.version, smoke=smoke["response"])


def _engine_name(ctx: PipelineContext) -> str:
    from tfbig.serving.model_server import find_model_server

    engine = ctx.config.pipeline.engine
    if engine == "auto":
        return "tensorflow_model_server" if find_model_server() else "embedded"
    return engine


def measure(ctx: PipelineContext, inputs) -> list[dict]:
    from tfbig.serving.load import measure_latency

    options = ctx.config.pipeline
    targets = {"grpc": ctx.server.grpc_target, "rest": ctx.server.rest_target}
    return [measure_latency(target, protocol, ctx.model_name, inputs, concurrency=concurrency,
                            requests=options.latency_requests, label="canary", credentials=ctx.credentials)
            for protocol, target in targets.items() for concurrency in options.latency_concurrency]


# ---------------------------------------------------------------------- report


def run_report(ctx: PipelineContext) -> ReportSummary:
    from tfbig.report import write_report

    evaluated = ctx.state.summary(EvaluateSummary)
    write_json(ctx.run.environment, environment(ctx.config, evaluated.replicas if evaluated else None))
    return ReportSummary(html=write_report(ctx.run_dir).html)


def environment(config: Config, replicas: int | None) -> dict:
    """Versions, devices and strategy: what a figure in the report was measured on."""
    import importlib.metadata
    import platform

    import tensorflow as tf

    packages = {}
    for name in ("tfbig", "tensorflow", "tf-keras", "tensorflow-model-optimization",
                 "tensorflow-serving-api", "tf2onnx", "onnxruntime", "ai-edge-litert", "numpy",
                 "sentencepiece", "tensorflow-text"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    devices = [d.name for d in tf.config.list_logical_devices()]
    return {"python": platform.python_version(), "platform": platform.platform(),
            "packages": packages, "cpu_count": os.cpu_count(), "devices": devices,
            "strategy": config.distribute.strategy, "replicas": replicas}


# The pipeline, in order.
STAGES = (
    Stage(PrepareSummary, prepare_up_to_date, run_prepare),
    Stage(TrainSummary, train_up_to_date, run_train),
    Stage(EvaluateSummary, evaluate_up_to_date, run_evaluate),
    Stage(CompressSummary, compress_up_to_date, run_compress),
    Stage(ExportSummary, export_up_to_date, run_export),
    Stage(ValidateSummary, validate_up_to_date, run_validate),
    Stage(CanarySummary, canary_up_to_date, run_canary),
    Stage(ServeSummary, serve_up_to_date, run_serve),
    Stage(PromoteSummary, promote_up_to_date, run_promote),
    Stage(ReportSummary, lambda ctx: None, run_report),  # always rewritten: it reads every stage
)
