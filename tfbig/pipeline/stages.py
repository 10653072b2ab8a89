"""The stages of `tfbig pipeline`, each a pair: is it up to date, and run it.

`up_to_date(ctx)` returns the stage's summary when its outputs exist and are
still valid for the current inputs (the latest checkpoint, the exported
version, the labels), else None; `run(ctx)` does the work and returns the
summary. Each stage reads only files the stages before it wrote, so any stage
can be re-run alone after an interruption.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shutil

import numpy as np

from tfbig.config import Config, ConfigError, config_to_dict, replace
from tfbig.errors import RunError
from tfbig.export.signatures import GENERATE, INPUT_KEY, LOGITS, PREDICT
from tfbig.files import write_atomic, write_json
from tfbig.pipeline.state import PipelineState
from tfbig.rundir import RunDir

SMOKE_PROMPT = b"def "
SMOKE_NEW_TOKENS = 24
# How often the pipeline's server re-reads models.config (label moves are also pushed to it).
CONFIG_POLL_S = 2


class GateError(RunError, ValueError):
    """The model missed a quality gate of `pipeline:`; nothing is exported."""


@dataclasses.dataclass
class PipelineContext:
    config: Config
    state: PipelineState
    model_name: str
    base_path: str
    server: object = None  # the ServerProcess started by `serve`, while it runs

    @property
    def run_dir(self) -> str:
        return self.config.output.dir

    @property
    def run(self) -> RunDir:
        return RunDir(self.run_dir)

    @property
    def train_config(self) -> Config:
        """The config the run is trained with: uncompressed. In a run directory's config,
        compress.method marks a run that compression made (see `tfbig.export.restore`);
        the pipeline's compress section is applied by the compress stage instead."""
        return replace(self.config, {"compress": {}})

    @functools.cached_property
    def strategy(self):
        from tfbig.distribute import make_strategy

        return make_strategy(self.config.distribute)

    @functools.cached_property
    def credentials(self):
        """What the pipeline's requests to its server send: the token of pipeline.auth_token_file."""
        from tfbig.serving import Credentials

        token_file = self.config.pipeline.auth_token_file
        return Credentials.from_files(token_file=token_file) if token_file else Credentials()

    @property
    def registry(self):
        from tfbig.lifecycle import ModelRegistry

        return ModelRegistry(self.base_path, model_name=self.model_name)

    @property
    def compressed(self) -> bool:
        return self.config.compress.method != "none"

    @property
    def export_source(self) -> str:
        """The run directory whose model is exported: the compressed one, if any."""
        return self.run.compressed if self.compressed else self.run_dir

    @property
    def version(self) -> int:
        return self.state.summary("export")["version"]


def latest_checkpoint(run_dir: str) -> str | None:
    import tensorflow as tf  # reads the checkpoint index file; no TF op runs

    return tf.train.latest_checkpoint(RunDir(run_dir).checkpoints)


def _checkpoint_step(path: str | None) -> int:
    match = re.search(r"ckpt-(\d+)$", path or "")
    return int(match.group(1)) if match else -1


# ----------------------------------------------------------------------- train


def train_up_to_date(ctx: PipelineContext) -> dict | None:
    checkpoint = latest_checkpoint(ctx.run_dir)
    if _checkpoint_step(checkpoint) >= ctx.config.train.steps:
        return {"checkpoint": checkpoint, "step": _checkpoint_step(checkpoint)}
    return None


def run_train(ctx: PipelineContext) -> dict:
    from tfbig.train import train

    result = train(ctx.train_config)  # resumes an interrupted run
    return {"checkpoint": result.checkpoint, "step": result.step, **result.eval_metrics}


# -------------------------------------------------------------------- evaluate


def evaluate_up_to_date(ctx: PipelineContext) -> dict | None:
    done = ctx.state.summary("evaluate")
    if done and done.get("checkpoint") == latest_checkpoint(ctx.run_dir):
        check_gates(ctx.config, done)
        return done
    return None


def run_evaluate(ctx: PipelineContext) -> dict:
    """A full pass over the eval split with the latest checkpoint, then the quality gates."""
    from tfbig.models import precision_policy
    from tfbig.train.run import build_trainer

    with precision_policy(ctx.config.train.precision):
        trainer = build_trainer(ctx.config, ctx.strategy)
        checkpoint = trainer.checkpointer.restore_latest()
        metrics = trainer.evaluate()
    summary = {"checkpoint": checkpoint, "step": int(trainer.step.numpy()),
               "replicas": ctx.strategy.num_replicas_in_sync, **metrics}
    check_gates(ctx.config, summary)
    return summary


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


def compress_up_to_date(ctx: PipelineContext) -> dict | None:
    if not ctx.compressed:
        return {"method": "none"}
    done = ctx.state.summary("compress")
    report = RunDir(ctx.export_source).compression_json
    if (done and done.get("source_checkpoint") == latest_checkpoint(ctx.run_dir)
            and os.path.exists(report)):
        return done
    return None


def run_compress(ctx: PipelineContext) -> dict:
    """Compress the latest checkpoint: resume an interrupted fine-tuning of the same
    checkpoint, start afresh when training has moved on (a longer `train.steps`)."""
    from tfbig.compress import compress_run

    source = latest_checkpoint(ctx.run_dir)
    marker = RunDir(ctx.export_source).compressed_from
    if os.path.isdir(ctx.export_source) and _read_text(marker) != source:
        shutil.rmtree(ctx.export_source)
    os.makedirs(ctx.export_source, exist_ok=True)
    write_atomic(marker, source)
    section = json.dumps(config_to_dict(ctx.config.compress))  # JSON is YAML: one override
    result = compress_run(ctx.run_dir, overrides=(f"compress={section}",), output_dir=ctx.export_source)
    after = {k: v for k, v in result.after.items() if k.startswith("eval_")}
    check_gates(ctx.config, after)
    return {"method": result.method, "output_dir": result.output_dir, "source_checkpoint": source,
            "before": result.before, "after": result.after}


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


# ---------------------------------------------------------------------- export


def export_up_to_date(ctx: PipelineContext) -> dict | None:
    from tfbig.export import read_manifest

    done = ctx.state.summary("export")
    path = os.path.join(ctx.base_path, str(done.get("version", "")))
    # Both ends of the chain: a compressed run made afresh reuses its checkpoint names.
    if done and os.path.isdir(path) and done.get("trained_checkpoint") == latest_checkpoint(ctx.run_dir):
        manifest = read_manifest(path) or {}
        if manifest.get("training", {}).get("checkpoint") == latest_checkpoint(ctx.export_source):
            return done
    return None


def run_export(ctx: PipelineContext) -> dict:
    from tfbig.export import export_run

    options = ctx.config.pipeline
    result = export_run(ctx.export_source, ctx.base_path, onnx=options.onnx, tflite=tuple(options.tflite),
                        sign_key=options.sign_key or None)
    return {"version": result.version, "path": result.path, "signatures": list(result.signatures),
            "artifacts": result.artifacts, "trained_checkpoint": latest_checkpoint(ctx.run_dir)}


# -------------------------------------------------------------------- validate


def validate_up_to_date(ctx: PipelineContext) -> dict | None:
    validation = ctx.registry.validation(ctx.version)
    return _validation_summary(validation) if validation and validation["passed"] else None


def run_validate(ctx: PipelineContext) -> dict:
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


def _validation_summary(record: dict) -> dict:
    keys = ("version", "engine", "checks", "load_seconds", "note")
    return {k: record[k] for k in keys if k in record}


# ---------------------------------------------------------------------- labels


def _label_up_to_date(label: str, ctx: PipelineContext) -> dict | None:
    labels = ctx.registry.labels()
    if labels.get(label) == ctx.version or (label == "canary" and labels.get("stable") == ctx.version):
        return {"labels": labels}
    return None


def canary_up_to_date(ctx: PipelineContext) -> dict | None:
    return _label_up_to_date("canary", ctx)


def run_canary(ctx: PipelineContext) -> dict:
    return {"labels": ctx.registry.promote(ctx.version, "canary")}


def promote_up_to_date(ctx: PipelineContext) -> dict | None:
    return _label_up_to_date("stable", ctx)


def run_promote(ctx: PipelineContext) -> dict:
    """`stable` moves to the version the canary served; on the live server without a gap."""
    registry = ctx.registry
    server = ctx.server.grpc_target if ctx.server else None
    labels = registry.promote(ctx.version, "stable", server=server, credentials=ctx.credentials)
    removed = registry.prune_old(ctx.config.pipeline.keep_versions) if ctx.config.pipeline.keep_versions else []
    return {"labels": labels, "removed_versions": removed}


# ----------------------------------------------------------------------- serve


def serve_command(ctx: PipelineContext) -> list[str]:
    """The `tfbig serve` flags that serve this model base path with its labels."""
    flags = [f"--model_config_file={ctx.registry.config_file}",
             f"--model_config_file_poll_wait_seconds={CONFIG_POLL_S}"]
    if ctx.config.pipeline.auth_token_file:
        flags.append(f"--auth_token_file={os.path.abspath(ctx.config.pipeline.auth_token_file)}")
    return flags


def serve_up_to_date(ctx: PipelineContext) -> dict | None:
    try:
        with open(ctx.run.serving, encoding="utf-8") as f:
            measured = json.load(f)
    except (OSError, ValueError):
        return None
    return {"version": measured["version"]} if measured.get("version") == ctx.version else None


def start_server(ctx: PipelineContext) -> None:
    from tfbig.serving.process import ServerProcess

    ctx.server = ServerProcess(serve_command(ctx), model_name=ctx.model_name,
                               log_path=ctx.run.serve_log,
                               engine=ctx.config.pipeline.engine, credentials=ctx.credentials).start()


def run_serve(ctx: PipelineContext) -> dict:
    """Start the server on the labels, query the canary, measure latency; the server stays up."""
    start_server(ctx)
    measured = {"version": ctx.version, "model": ctx.model_name, "label": "canary",
                "engine": _engine_name(ctx), "target": ctx.server.grpc_target,
                "smoke": smoke_query(ctx), "latency": measure(ctx)}
    write_json(ctx.run.serving, measured)
    return {"version": ctx.version, "smoke": measured["smoke"]["response"]}


def _engine_name(ctx: PipelineContext) -> str:
    from tfbig.serving.model_server import find_model_server

    engine = ctx.config.pipeline.engine
    if engine == "auto":
        return "tensorflow_model_server" if find_model_server() else "embedded"
    return engine


def smoke_query(ctx: PipelineContext) -> dict:
    """One real request through the bundled client: text from a GPT, a class otherwise."""
    import time

    from tfbig.serving import Client

    request = smoke_request(ctx)
    with Client(ctx.server.grpc_target, timeout=60.0, **ctx.credentials.client_kwargs()) as client:
        start = time.perf_counter()
        outputs = client.predict(ctx.model_name, request["inputs"], signature=request["signature"],
                                 label="canary")
        latency_ms = (time.perf_counter() - start) * 1e3
    if request["signature"] == GENERATE:
        response = repr(outputs["text"][0].decode("utf-8", "replace"))
    else:
        response = f"class {int(np.argmax(outputs[LOGITS][0]))}"
    return {"signature": request["signature"], "request": request["shown"], "response": response,
            "latency_ms": round(latency_ms, 3)}


def smoke_request(ctx: PipelineContext) -> dict:
    if ctx.config.model.name == "gpt":
        return {"signature": GENERATE, "shown": f"generate {SMOKE_PROMPT!r}",
                "inputs": {"text": np.array([SMOKE_PROMPT], dtype=object),
                           "max_new_tokens": np.int32(SMOKE_NEW_TOKENS), "temperature": np.float32(0.0),
                           "top_k": np.int32(0), "seed": np.int64(0)}}
    return {"signature": PREDICT, "shown": "one eval example",
            "inputs": {INPUT_KEY: example_inputs(ctx)}}


def example_inputs(ctx: PipelineContext) -> np.ndarray:
    """One real eval example (batch of 1), from the requests recorded at export."""
    from tfbig.export.warmup import EXPECTED_FILE, read_warmup
    from tfbig.serving import codec

    path = os.path.join(ctx.base_path, str(ctx.version), EXPECTED_FILE)
    for log in read_warmup(path):
        request = log.predict_log.request
        if request.model_spec.signature_name == PREDICT:
            return codec.from_tensor_proto(request.inputs[INPUT_KEY])[:1]
    raise ConfigError(f"{path} holds no {PREDICT} request")


def measure(ctx: PipelineContext) -> list[dict]:
    from tfbig.serving.load import measure_latency

    options = ctx.config.pipeline
    inputs = example_inputs(ctx)
    targets = {"grpc": ctx.server.grpc_target, "rest": ctx.server.rest_target}
    return [measure_latency(target, protocol, ctx.model_name, inputs, concurrency=concurrency,
                            requests=options.latency_requests, label="canary", credentials=ctx.credentials)
            for protocol, target in targets.items() for concurrency in options.latency_concurrency]


# ---------------------------------------------------------------------- report


def run_report(ctx: PipelineContext) -> dict:
    from tfbig.report import write_report

    replicas = ctx.state.summary("evaluate").get("replicas")
    write_json(ctx.run.environment, environment(ctx.config, replicas))
    files = write_report(ctx.run_dir)
    return {"html": files.html}


def environment(config: Config, replicas: int | None) -> dict:
    """Versions, devices and strategy: what a figure in the report was measured on."""
    import importlib.metadata
    import platform

    import tensorflow as tf

    packages = {}
    for name in ("tfbig", "tensorflow", "tf-keras", "tensorflow-model-optimization",
                 "tensorflow-serving-api", "tf2onnx", "onnxruntime", "ai-edge-litert", "numpy"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    devices = [d.name for d in tf.config.list_logical_devices()]
    return {"python": platform.python_version(), "platform": platform.platform(),
            "packages": packages, "cpu_count": os.cpu_count(), "devices": devices,
            "strategy": config.distribute.strategy, "replicas": replicas}


STAGE_FUNCTIONS = {
    "train": (train_up_to_date, run_train),
    "evaluate": (evaluate_up_to_date, run_evaluate),
    "compress": (compress_up_to_date, run_compress),
    "export": (export_up_to_date, run_export),
    "validate": (validate_up_to_date, run_validate),
    "canary": (canary_up_to_date, run_canary),
    "serve": (serve_up_to_date, run_serve),
    "promote": (promote_up_to_date, run_promote),
    "report": (lambda ctx: None, run_report),  # always rewritten: it reads every stage
}
