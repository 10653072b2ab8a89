"""`tfbig pipeline CONFIG`: prepare -> train -> evaluate -> compress -> export ->
validate -> canary -> serve -> promote -> report, resumable stage by stage.

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
from tfbig.pipeline.context import PipelineContext
from tfbig.pipeline.smoke import SMOKE
from tfbig.pipeline.state import PipelineState, now
from tfbig.rundir import RunDir
from tfbig.summaries import ExportSummary, ReportSummary, Summary

STAGES = tuple(stage.name for stage in stages.STAGES)

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
        body, python = SMOKE.rest_body(), SMOKE.python(name)
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
    if config.data.prepare is not None:  # where the prepare stage writes and training reads
        dataset = config.data.paths[0] if config.data.paths else RunDir(config.output.dir).dataset
        config = replace(config, {"data.paths": [os.path.abspath(dataset)]})
    name = model_name(config)
    base = model_base_path(config, name)
    os.makedirs(config.output.dir, exist_ok=True)
    state = PipelineState(config.output.dir, model_name=name, model_base_path=base, order=STAGES)
    ctx = PipelineContext(config=config, model_name=name, base_path=base, state=state)
    statuses = {}
    try:
        for stage in stages.STAGES[:STAGES.index(until) + 1]:
            statuses[stage.name] = _run_stage(ctx, stage, say)
        if keep_serving and ctx.state.summary(ExportSummary):
            _serve_until_stopped(ctx, say)
    except PipelineError:
        if until == "report":
            _best_effort_report(ctx)
        raise
    finally:
        if ctx.server:
            ctx.server.stop()
            ctx.server = None
    export, report = ctx.state.summary(ExportSummary), ctx.state.summary(ReportSummary)
    return PipelineResult(run_dir=config.output.dir, model_name=name, model_base_path=base,
                          version=export.version if export else None, statuses=statuses,
                          report=report.html if report else None,
                          serve_flags=stages.serve_command(ctx) if export else [])


def _run_stage(ctx: PipelineContext, stage: stages.Stage, say) -> str:
    started, clock = now(), time.perf_counter()
    try:
        summary = stage.up_to_date(ctx)
        status = "skipped"
        if summary is None:
            say(f"[pipeline] {stage.name} ...")
            summary, status = stage.run(ctx), "done"
    except KeyboardInterrupt:
        ctx.state.record(stage.name, status="failed", started=started,
                         seconds=time.perf_counter() - clock, error="interrupted")
        raise
    except Exception as error:
        message = _one_line(error)
        ctx.state.record(stage.name, status="failed", started=started,
                         seconds=time.perf_counter() - clock, error=message)
        if not isinstance(error, TfbigError):  # a bug: keep its traceback
            raise
        raise PipelineError(f"stage {stage.name} failed: {message}") from error
    seconds = time.perf_counter() - clock
    ctx.state.record(stage.name, status=status, started=started, seconds=seconds, summary=summary)
    say(f"[pipeline] {stage.name}: {status} ({seconds:.1f} s){_shown(summary)}")
    return status


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _shown(summary: Summary) -> str:
    shown = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.shown().items()]
    return ": " + ", ".join(shown) if shown else ""


def _best_effort_report(ctx: PipelineContext) -> None:
    """A failed pipeline still gets its report (what ran, and the error); never a second failure."""
    try:
        stages.run_report(ctx)
    except Exception:  # noqa: BLE001 - the stage failure is what the user must see
        pass


def _serve_until_stopped(ctx: PipelineContext, say) -> None:
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
