"""`tfbig pipeline CONFIG`: train -> evaluate -> compress -> export -> validate ->
canary -> serve -> promote -> report, resumable stage by stage.

A stage whose outputs are complete and valid is skipped (see
`tfbig.pipeline.stages`), so re-running after an interruption, or after
raising `train.steps`, redoes only what changed. A failing stage stops the
pipeline with one line saying which stage and why; the labels a server
follows move only in `canary` and `promote`, after validation, so a failure
before them leaves every promoted version as it was. The server that `serve`
starts is stopped at the end (or kept, with `keep_serving`).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import threading
import time

from tfbig.config import Config, ConfigError, replace
from tfbig.errors import RunError, TfbigError
from tfbig.pipeline import stages
from tfbig.pipeline.state import STAGES, PipelineState, now
from tfbig.rundir import RunDir

# Single-process strategies: a cluster trains under `tfbig launch`, then the
# pipeline takes the run from there (its train stage finds the run complete).
PIPELINE_STRATEGIES = ("one_device", "mirrored", "tpu", "dtensor")


class PipelineError(RunError, RuntimeError):
    """A stage failed; the message names it and says why."""


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    run_dir: str
    model_name: str
    model_base_path: str
    version: int | None
    statuses: dict[str, str]  # stage -> done | skipped (this run)
    report: str | None
    serve_flags: list[str]


def serving_hint(result: PipelineResult, *, model_family: str) -> str:
    """How to serve the promoted model again, and query it by curl and from Python."""
    name = result.model_name
    flags = " ".join(shlex.quote(f) for f in result.serve_flags)
    if model_family == "gpt":
        body = ('{"signature_name": "generate", "inputs": {"text": ["def "], "max_new_tokens": 32, '
                '"temperature": 0.0, "top_k": 0, "seed": 0}}')
        python = (f'Client("localhost:8500").predict("{name}", {{"text": [b"def "], "max_new_tokens": 32, '
                  f'"temperature": 0.0, "top_k": 0, "seed": 0}}, signature="generate", label="stable")')
    else:
        body = '{"instances": [EXAMPLE]}'
        python = f'Client("localhost:8500").predict("{name}", examples, label="stable")'
    return "\n".join([
        f"serve it again:  tfbig serve --port=8500 --rest_api_port=8501 {flags}",
        f"query by REST:   curl -s -d '{body}' localhost:8501/v1/models/{name}/labels/stable:predict",
        f"from Python:     from tfbig.serving import Client; {python}",
    ])


def model_name(config: Config) -> str:
    from tfbig.serving.config_files import check_model_name

    return check_model_name(config.pipeline.model_name
                            or os.path.basename(os.path.normpath(config.output.dir)))


def model_base_path(config: Config, name: str) -> str:
    return os.path.abspath(config.pipeline.model_base_path
                           or RunDir(config.output.dir).model_base_path(name))


def run_pipeline(config: Config, *, until: str = "report", keep_serving: bool = False,
                 say=print) -> PipelineResult:
    """Run every stage up to `until` that is not up to date; see the module docstring."""
    if until not in STAGES:
        raise ConfigError(f"--until {until!r}: choose one of {', '.join(STAGES)}")
    if config.distribute.strategy not in PIPELINE_STRATEGIES:
        raise ConfigError(
            f"distribute.strategy {config.distribute.strategy!r} runs one process per task: train "
            f"under `tfbig launch` first, then run the pipeline on the run with "
            f"--set distribute.strategy=one_device (its train stage finds the run complete)")
    # Absolute from here on: the records compare checkpoint and run paths across runs,
    # which may start from another working directory.
    config = replace(config, {"output.dir": os.path.abspath(config.output.dir)})
    name = model_name(config)
    base = model_base_path(config, name)
    os.makedirs(config.output.dir, exist_ok=True)
    ctx = stages.PipelineContext(config=config, model_name=name, base_path=base,
                                 state=PipelineState(config.output.dir, model_name=name, model_base_path=base))
    statuses = {}
    try:
        for stage in STAGES[:STAGES.index(until) + 1]:
            statuses[stage] = _run_stage(ctx, stage, say)
        if keep_serving and ctx.state.summary("export"):
            _serve_until_stopped(ctx, say)
    except PipelineError:
        if until == "report":
            _best_effort_report(ctx)
        raise
    finally:
        if ctx.server:
            ctx.server.stop()
            ctx.server = None
    export = ctx.state.summary("export")
    report = ctx.state.summary("report").get("html")
    return PipelineResult(run_dir=config.output.dir, model_name=name, model_base_path=base,
                          version=export.get("version"), statuses=statuses, report=report,
                          serve_flags=stages.serve_command(ctx) if export else [])


def _run_stage(ctx: stages.PipelineContext, stage: str, say) -> str:
    up_to_date, run = stages.STAGE_FUNCTIONS[stage]
    started, clock = now(), time.perf_counter()
    try:
        summary = up_to_date(ctx)
        status = "skipped"
        if summary is None:
            say(f"[pipeline] {stage} ...")
            summary, status = run(ctx), "done"
    except KeyboardInterrupt:
        ctx.state.record(stage, status="failed", started=started, seconds=time.perf_counter() - clock,
                         error="interrupted")
        raise
    except Exception as error:
        message = _one_line(error)
        ctx.state.record(stage, status="failed", started=started, seconds=time.perf_counter() - clock,
                         error=message)
        if not isinstance(error, TfbigError):  # a bug: keep its traceback
            raise
        raise PipelineError(f"stage {stage} failed: {message}") from error
    seconds = time.perf_counter() - clock
    ctx.state.record(stage, status=status, started=started, seconds=seconds, summary=summary)
    say(f"[pipeline] {stage}: {status} ({seconds:.1f} s){_shown(summary)}")
    return status


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _shown(summary: dict) -> str:
    keys = ("step", "eval_accuracy", "eval_perplexity", "method", "version", "labels", "smoke", "html")
    shown = [f"{k}={summary[k]:.4g}" if isinstance(summary[k], float) else f"{k}={summary[k]}"
             for k in keys if k in summary]
    return ": " + ", ".join(shown) if shown else ""


def _best_effort_report(ctx: stages.PipelineContext) -> None:
    """A failed pipeline still gets its report (what ran, and the error); never a second failure."""
    try:
        stages.run_report(ctx)
    except Exception:  # noqa: BLE001 - the stage failure is what the user must see
        pass


def _serve_until_stopped(ctx: stages.PipelineContext, say) -> None:
    if ctx.server is None:  # `serve` was up to date: nothing is running yet
        stages.start_server(ctx)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    say(f"[pipeline] serving {ctx.model_name} on gRPC {ctx.server.grpc_target} and REST "
        f"{ctx.server.rest_target}; Ctrl-C stops it")
    try:
        stop.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
