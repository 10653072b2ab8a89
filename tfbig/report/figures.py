"""The report's figures, each drawn from collected data into PNG bytes.

Each figure is drawn on a bare `Figure` with the Agg canvas: no display is
needed and pyplot's global state (which leaks figures across calls) is never
touched. A figure whose data is absent is not drawn (its function returns
None), so a half-finished run gets a shorter report, not empty axes.
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

FIGSIZE = (6.4, 3.6)
DPI = 100


def draw_figures(run: dict) -> dict[str, bytes]:
    """PNG bytes of every figure `run` (from `collect_run`) has data for, by name."""
    serving = run.get("serving") or {}
    drawn = {
        "training": training_png(run["train"], run["eval"]),
        "eval": eval_png(run["eval"]),
        "throughput": throughput_png(run["train"]),
        "serving_latency": serving_latency_png(serving.get("latency") or []),
    }
    return {name: png for name, png in drawn.items() if png is not None}


def training_png(train: list[dict], evals: list[dict]) -> bytes | None:
    """Train loss (line) and eval loss (markers) against step; log y when all positive."""
    lines = [(_series(train, "loss"), "train loss", "-"),
             (_series(evals, "eval_loss"), "eval loss", "o-")]
    lines = [line for line in lines if line[0][0]]
    if not lines:
        return None
    figure, (axes,) = new_figure(1)
    for (steps, values), label, style in lines:
        axes.plot(steps, values, style, label=label)
    if all(v > 0 for (_, values), _, _ in lines for v in values):
        axes.set_yscale("log")
    finish_axes(axes, "loss", title="training loss", legend=True)
    return to_png(figure)


def eval_png(evals: list[dict]) -> bytes | None:
    """Eval accuracy and/or perplexity against step, one panel each (their scales differ)."""
    metrics = [(key, _series(evals, key)) for key in ("eval_accuracy", "eval_perplexity")]
    metrics = [(key, series) for key, series in metrics if series[0]]
    if not metrics:
        return None
    figure, panels = new_figure(len(metrics))
    for axes, (key, (steps, values)) in zip(panels, metrics):
        axes.plot(steps, values, "o-")
        finish_axes(axes, key.removeprefix("eval_"), title=key.replace("_", " "))
    return to_png(figure)


def throughput_png(train: list[dict]) -> bytes | None:
    """Tokens/s for language models (what their speed is quoted in), else examples/s."""
    for key in ("tokens_per_s", "examples_per_s"):
        steps, values = _series(train, key)
        if steps:
            figure, (axes,) = new_figure(1)
            axes.plot(steps, values, "-")
            finish_axes(axes, key.replace("_per_s", "/s"), title="training throughput")
            return to_png(figure)
    return None


def serving_latency_png(latency: list[dict]) -> bytes | None:
    """p50/p99 latency and requests/s against concurrency, one line (pair) per protocol."""
    rows = [row for row in latency if isinstance(row, dict) and _number(row.get("concurrency"))]
    if not rows:
        return None
    figure, (left, right) = new_figure(2)
    protocols = sorted({str(row.get("protocol", "?")) for row in rows})
    for color, protocol in enumerate(protocols):
        own = sorted((row for row in rows if str(row.get("protocol", "?")) == protocol),
                     key=lambda row: row["concurrency"])
        for key, style in (("p50_ms", "o-"), ("p99_ms", "s--")):
            left.plot(*_series(own, key, x="concurrency"), style, color=f"C{color}",
                      label=f"{protocol} {key[:3]}")
        right.plot(*_series(own, "requests_per_s", x="concurrency"), "o-", color=f"C{color}",
                   label=protocol)
    finish_axes(left, "latency (ms)", x="concurrency", title="serving latency", legend=True)
    finish_axes(right, "requests/s", x="concurrency", title="serving throughput", legend=True)
    return to_png(figure)


def _series(records: list[dict], key: str, *, x: str = "step") -> tuple[list, list]:
    """(x values, `key` values) over the records where both are numbers (null = NaN logged)."""
    pairs = [(r[x], r[key]) for r in records if _number(r.get(x)) and _number(r.get(key))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def new_figure(panels: int) -> tuple[Figure, list]:
    figure = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(figure)
    return figure, [figure.add_subplot(1, panels, i + 1) for i in range(panels)]


def finish_axes(axes, ylabel: str, *, title: str, x: str = "step", legend: bool = False) -> None:
    axes.set_title(title, fontsize=10)
    axes.set_xlabel(x)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    if legend:
        axes.legend(fontsize=8)


def to_png(figure: Figure) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
