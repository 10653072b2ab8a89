"""The before/after report of `tfbig compress`, measured on deployable artifacts.

What is measured is always a file a user would ship, never the in-memory
Keras model (whose pruning masks, fake-quant nodes or cluster tables are not
what gets deployed):

- a float SavedModel (`save_saved_model`): the `before` model, and `after`
  for prune / cluster / distill. Size = the bytes of its `variables/` files
  (the graph in `saved_model.pb` is code, not weights, and is almost the same
  size before and after); non-zeros are counted in the tensors read back from
  the variables checkpoint on disk.
- a TFLite file: `after` for qat / ptq-*. Size = the file; non-zeros are
  counted in its constant tensors, read back through the interpreter.

`gzip_bytes` is there because zeros and few distinct values (pruning,
clustering) do not shrink a dense file, only its compressed download.

Both kinds share one code path (`_measure`): eval over the eval split with
the training loss/accuracy definitions (`tfbig.train.losses`), median
single-example latency, gzip size and non-zero counting; they differ only in
which files they weigh, which tensors they count and how they predict.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import shutil
import statistics
import time
from typing import Callable, Iterable

import numpy as np
import tensorflow as tf

from tfbig import saved_model
from tfbig.export.exporter import save_servable
from tfbig.export.signatures import INPUT_KEY, LOGITS, PREDICT, predict_function
from tfbig.export.tflite import TFLiteRunner
from tfbig.files import staged_directory, write_atomic, write_json
from tfbig.rundir import RunDir
from tfbig.train.losses import per_example_accuracy, per_example_loss

REPORT_FORMAT = "tfbig-compress-report/1"
SAVED_MODEL = "saved_model"
TFLITE = "tflite"
# Untimed calls before timing: the first calls trace, allocate and fill caches.
WARMUP_CALLS = 5
GZIP_LEVEL = 9
# The checkpoint entry that describes the object graph, not a tensor.
_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"

Predict = Callable[[np.ndarray], np.ndarray]  # inputs (batch first) -> float logits


# ------------------------------------------------------------------ artifacts


def save_saved_model(model, spec, path: str) -> str:
    """Save `model` as a float SavedModel at `path`, the way `tfbig export` does.

    Only the `serving_default` predict signature over `model`'s variables
    (`tfbig.export.exporter.save_servable`), so the measured files are exactly
    the weights a server loads. Staged beside `path` and renamed into place
    (`tfbig.files.staged_directory`), so `path` is either the complete new
    SavedModel or (if saving fails) what it was before; an existing `path` is
    replaced.
    """
    with staged_directory(path, prefix=".tmp-saved_model-") as staging:
        save_servable(staging, model, {PREDICT: predict_function(model, spec)})
    return path


def measure_saved_model(path: str, source, *, eval_steps: int = 0, latency_runs: int = 100,
                        batch_size: int = 64) -> dict:
    """Measure the float SavedModel at `path` (see the module docstring and `_measure`).

    size_bytes/gzip_bytes: the files under `variables/`; nonzero_fraction and
    params: every floating-point tensor of the variables checkpoint as stored
    on disk; latency and eval: the reloaded `serving_default` signature.
    """
    variables = os.path.join(path, "variables")
    files = sorted(os.path.join(root, name)
                   for root, _, names in os.walk(variables) for name in names)
    signature = saved_model.load(path).signatures[PREDICT]

    def predict(inputs: np.ndarray) -> np.ndarray:
        return signature(**{INPUT_KEY: tf.constant(inputs)})[LOGITS].numpy()

    return _measure(
        {"format": SAVED_MODEL, "path": path}, files,
        _checkpoint_tensors(os.path.join(variables, "variables")), predict, source,
        eval_steps=eval_steps, latency_runs=latency_runs, batch_size=batch_size)


def measure_tflite(path: str, source, *, eval_steps: int = 0, latency_runs: int = 100,
                   batch_size: int = 64) -> dict:
    """Measure the TFLite file at `path` (see the module docstring and `_measure`).

    size_bytes/gzip_bytes: the file; nonzero_fraction and params: its constant
    tensors that hold numbers (see `_tflite_constants`); latency and eval:
    `TFLiteRunner`, i.e. the LiteRT interpreter with its default delegates.
    """
    return _measure(
        {"format": TFLITE, "path": path}, [path], _tflite_constants(path), TFLiteRunner(path),
        source, eval_steps=eval_steps, latency_runs=latency_runs, batch_size=batch_size)


def _checkpoint_tensors(prefix: str) -> Iterable[np.ndarray]:
    """Every floating-point tensor stored in the checkpoint at `prefix`.

    Integer entries (dropout RNG state, step counters) are not weights, and
    the object-graph entry is metadata.
    """
    reader = tf.train.load_checkpoint(prefix)
    for key, dtype in sorted(reader.get_variable_to_dtype_map().items()):
        if _OBJECT_GRAPH_KEY not in key and dtype.is_floating:
            yield reader.get_tensor(key)


def _tflite_constants(path: str) -> Iterable[np.ndarray]:
    """The constant tensors of the TFLite file at `path` that hold numbers.

    A constant is a tensor whose data is stored in the file (its flatbuffer
    buffer is non-empty): exactly the weights as deployed, read back with
    `Interpreter.get_tensor`. Counted are float tensors (float32, float16)
    and quantized integer tensors (int8 weights, int32 biases: integers with
    a quantization scale, i.e. real numbers in another encoding), so float,
    dynamic-range and int8 files are counted alike and a pruned zero stays a
    zero (symmetric weight quantization maps 0.0 to 0). Plain integer
    constants (shapes, axes, indices) are not weights and are skipped.
    Intermediate float copies (e.g. the output of DEQUANTIZE of a float16
    weight) are computed, not stored, so nothing is counted twice. The
    interpreter runs without default delegates, which may repack weights.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with open(path, "rb") as f:
        content = f.read()
    flatbuffer = schema.Model.GetRootAs(content, 0)
    interpreter = Interpreter(
        model_content=content,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    for index in range(flatbuffer.SubgraphsLength()):
        subgraph = flatbuffer.Subgraphs(index)
        stored = set()
        for t in range(subgraph.TensorsLength()):
            buffer = flatbuffer.Buffers(subgraph.Tensors(t).Buffer())
            # Offset > 1: data kept after the flatbuffer (models over 2 GB).
            if buffer is not None and (buffer.DataLength() > 0 or buffer.Offset() > 1):
                stored.add(t)
        for detail in interpreter.get_tensor_details(index):
            dtype = np.dtype(detail["dtype"])
            quantized = len(detail["quantization_parameters"]["scales"]) > 0
            if detail["index"] in stored and (
                    np.issubdtype(dtype, np.floating)
                    or (np.issubdtype(dtype, np.integer) and quantized)):
                yield interpreter.get_tensor(detail["index"], index)


# ------------------------------------------------------------- shared measuring


def _measure(artifact: dict, files: list[str], tensors: Iterable[np.ndarray], predict: Predict,
             source, *, eval_steps: int, latency_runs: int, batch_size: int) -> dict:
    """The report entry of one artifact.

    eval_*: the eval split (its first `eval_steps` batches; 0 = all of it),
    with the training definitions: mean cross-entropy per example (for LMs
    the mean over the example's tokens), top-1 accuracy, perplexity =
    exp(eval_loss). latency_ms: the median wall time of `latency_runs`
    calls on one eval example (batch 1), after `WARMUP_CALLS` untimed ones,
    including the copy of the logits back to numpy.
    """
    if latency_runs < 1:
        raise ValueError(f"latency_runs: {latency_runs} must be >= 1")
    params = nonzero = 0
    for values in tensors:
        params += int(values.size)
        nonzero += int(np.count_nonzero(values))
    metrics, example = _evaluate(predict, source, eval_steps=eval_steps, batch_size=batch_size)
    return {
        "artifact": artifact,
        **metrics,
        "size_bytes": sum(os.path.getsize(f) for f in files),
        "gzip_bytes": _gzip_bytes(files),
        "nonzero_fraction": nonzero / max(params, 1),
        "params": params,
        "latency_ms": _latency_ms(predict, example, latency_runs),
        "latency_runs": latency_runs,
    }


def _evaluate(predict: Predict, source, *, eval_steps: int, batch_size: int):
    """(eval metrics, the first eval example with a batch dimension of 1)."""
    task = source.spec.task
    dataset = source.eval.make_dataset(batch_size=batch_size, shuffle=False, seed=0,
                                       repeat=False, drop_remainder=False)
    if eval_steps:
        dataset = dataset.take(eval_steps)
    loss_sum = right_sum = 0.0
    count = 0
    example = None
    for inputs, targets in dataset:
        inputs = inputs.numpy()
        if example is None:
            example = inputs[:1]
        logits = tf.constant(predict(inputs))
        loss_sum += float(np.sum(per_example_loss(task, targets, logits).numpy(), dtype=np.float64))
        right_sum += float(np.sum(per_example_accuracy(task, targets, logits).numpy(),
                                  dtype=np.float64))
        count += int(inputs.shape[0])
    if not count:
        raise ValueError("the eval split has no examples to measure the compressed model on; "
                         "set data.eval_fraction > 0")
    loss = loss_sum / count
    if task == "lm":
        metrics = {"eval_perplexity": math.exp(loss), "eval_loss": loss}
    else:
        metrics = {"eval_accuracy": right_sum / count, "eval_loss": loss}
    metrics["eval_examples"] = count
    return metrics, example


def _latency_ms(predict: Predict, example: np.ndarray, runs: int) -> float:
    for _ in range(WARMUP_CALLS):
        predict(example)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        predict(example)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


class _ByteCounter(io.RawIOBase):
    """A sink that only counts what is written to it."""

    def __init__(self):
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.count += len(data)
        return len(data)


def _gzip_bytes(files: list[str]) -> int:
    """Sum over `files` of each file's gzip size (level 9), streamed, so large files fit."""
    total = 0
    for path in files:
        counter = _ByteCounter()
        with gzip.GzipFile(fileobj=counter, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as out, \
                open(path, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
        total += counter.count
    return total


# --------------------------------------------------------------------- report


def write_report(out_dir: str, *, method: str, before: dict, after: dict,
                 details: dict | None = None) -> dict[str, str]:
    """Write report.json, report.md and report.png into `out_dir`; return their paths.

    `details` (e.g. which layers were pruned or left dense, and why) is passed
    through into report.json and shown in report.md. Each file is written to a
    temporary name and renamed, so a reader never sees half a report.
    """
    os.makedirs(out_dir, exist_ok=True)
    report = {"format": REPORT_FORMAT, "method": method, "before": before, "after": after}
    if details is not None:
        report["details"] = details
    run = RunDir(out_dir)
    paths = {"json": run.compression_json, "md": run.compression_md, "png": run.compression_png}
    markdown = f"# tfbig compress: {method}\n\n{markdown_table(method, before, after)}\n"
    markdown += (f"\nEval on {before['eval_examples']} eval examples; latency is the median of "
                 f"{after['latency_runs']} single-example calls.\n")
    if details:
        markdown += ("\n## Details\n\n```json\n"
                     + json.dumps(details, indent=2, default=_json_default) + "\n```\n")
    write_json(paths["json"], report, default=_json_default)
    write_atomic(paths["md"], markdown)
    write_atomic(paths["png"], plot_png(method, before, after))
    return paths


def markdown_table(method: str, before: dict, after: dict) -> str:
    """The before/after table as GitHub Markdown (report.md, and the README's results).

    Rows: the headline eval metric (accuracy for classifiers, perplexity for
    language models), eval loss, size, gzip size, non-zero fraction, params,
    latency and the artifact measured; `change` says it in words
    ("4.1x smaller", "-0.3 points").
    """
    rows = [("metric", "before", f"after ({method})", "change"), ("---",) * 4]
    if "eval_perplexity" in before:
        b, a = before["eval_perplexity"], after["eval_perplexity"]
        rows.append(("eval perplexity", f"{b:.3f}", f"{a:.3f}",
                     _signed(100 * (a / b - 1), ".1f") + "%"))
    else:
        b, a = 100 * before["eval_accuracy"], 100 * after["eval_accuracy"]
        rows.append(("eval accuracy", f"{b:.1f}%", f"{a:.1f}%", _signed(a - b, ".1f") + " points"))
    b, a = before["eval_loss"], after["eval_loss"]
    rows.append(("eval loss", f"{b:.4f}", f"{a:.4f}", _signed(a - b, ".4f")))
    for key, name in (("size_bytes", "size"), ("gzip_bytes", "gzip size")):
        rows.append((name, _bytes(before[key]), _bytes(after[key]),
                     _ratio(before[key], after[key], "smaller", "larger")))
    b, a = 100 * before["nonzero_fraction"], 100 * after["nonzero_fraction"]
    rows.append(("non-zero weights", f"{b:.1f}%", f"{a:.1f}%",
                 _signed(a - b, ".1f") + " points"))
    b, a = before["params"], after["params"]
    rows.append(("params", f"{b:,}", f"{a:,}", "same" if a == b else f"{a - b:+,}"))
    rows.append(("latency (batch 1)", f"{before['latency_ms']:.3f} ms",
                 f"{after['latency_ms']:.3f} ms",
                 _ratio(before["latency_ms"], after["latency_ms"], "faster", "slower")))
    rows.append(("artifact", _artifact(before), _artifact(after), ""))
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def plot_png(method: str, before: dict, after: dict) -> bytes:
    """PNG bytes: eval accuracy (or perplexity) against gzip size, before -> after.

    Drawn on a bare `Figure` with the Agg canvas, so it neither needs a
    display nor touches pyplot's global state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lm = "eval_perplexity" in before
    key, label = (("eval_perplexity", "eval perplexity (lower is better)") if lm
                  else ("eval_accuracy", "eval accuracy (%)"))
    scale = 1.0 if lm else 100.0
    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    points = [(before, "before (float)", "tab:blue"), (after, method, "tab:orange")]
    for measured, name, color in points:
        x, y = measured["gzip_bytes"] / 1024, scale * measured[key]
        axes.scatter([x], [y], s=60, color=color, zorder=3)
        axes.annotate(f"{name}\nnon-zero {100 * measured['nonzero_fraction']:.1f}%", (x, y),
                      textcoords="offset points", xytext=(8, 8), fontsize=9)
    axes.annotate("", xy=(after["gzip_bytes"] / 1024, scale * after[key]),
                  xytext=(before["gzip_bytes"] / 1024, scale * before[key]),
                  arrowprops={"arrowstyle": "->", "color": "gray"})
    axes.set_xlabel("gzip size (KiB)")
    axes.set_ylabel(label)
    axes.set_title(f"tfbig compress: {method}")
    axes.margins(0.3)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _signed(value: float, spec: str) -> str:
    """`value` with an explicit sign, and "+0.0" rather than "-0.0" for what rounds to zero."""
    text = format(value, "+" + spec)
    return "+" + text[1:] if float(text) == 0 else text


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _ratio(before: float, after: float, less: str, more: str) -> str:
    """"4.1x smaller" when `after` is the lesser, "1.2x larger" when the greater."""
    if before == after or not before or not after:
        return "same" if before == after else ""
    ratio, word = (before / after, less) if after < before else (after / before, more)
    return f"{ratio:.1f}x {word}" if ratio >= 1.1 else f"{ratio:.2f}x {word}"


def _artifact(measured: dict) -> str:
    artifact = measured["artifact"]
    if artifact["format"] == TFLITE:
        return f"TFLite `{os.path.basename(artifact['path'])}`"
    return "float SavedModel"


def _json_default(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable: {value!r}")

