"""`tfbig report RUN_DIR`: one self-contained HTML page per run, plus its parts.

The page must survive being mailed, attached to a ticket or opened years
later offline, so it has no external reference at all: the CSS is inline,
every figure is embedded as a base64 PNG and nothing needs JavaScript. The
same figures are also written as PNG files and the collected data as
report.json, for slides and for tools. Each file is written to a temporary
name and renamed, so a reader never sees half a report.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from html import escape

from tfbig.files import write_atomic, write_json
from tfbig.report.collect import collect_run
from tfbig.report.figures import draw_figures
from tfbig.rundir import RunDir

NOT_RUN = "not run"
CSS = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1000px; margin: 2em auto;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td { font-variant-numeric: tabular-nums; }
img { max-width: 100%; } pre { background: #f7f7f7; padding: .8em; overflow-x: auto; }
.not-run { color: #888; font-style: italic; } .notes { color: #a40; }
"""


@dataclass(frozen=True)
class ReportFiles:
    """Where `write_report` put the page, the collected data and each figure."""

    html: str
    json: str
    pngs: dict[str, str]


def write_report(run_dir: str) -> ReportFiles:
    """Collect `run_dir`, draw its figures and write RUN_DIR/report/ (see the module docstring)."""
    run = collect_run(run_dir)
    pngs = draw_figures(run)
    compression = run["compression"]
    if compression and compression["png"]:  # drawn by `tfbig compress`: embedded as is
        with open(compression["png"], "rb") as f:
            pngs["compression"] = f.read()
    out = RunDir(run["run_dir"]).report
    os.makedirs(out, exist_ok=True)
    files = ReportFiles(html=os.path.join(out, "index.html"), json=os.path.join(out, "report.json"),
                        pngs={name: os.path.join(out, f"{name}.png") for name in pngs})
    for name, png in pngs.items():
        write_atomic(files.pngs[name], png)
    figures = {name: os.path.basename(path) for name, path in files.pngs.items()}
    write_json(files.json, {**run, "figures": figures})
    write_atomic(files.html, render_html(run, pngs).encode())
    return files


def render_html(run: dict, pngs: dict[str, bytes]) -> str:
    """The page for `run` (from `collect_run`) with `pngs` embedded; all text escaped."""
    sections = {
        "Pipeline": _pipeline(run["stages"]),
        "Data": _data(run["data"]) if run["data"] else None,  # a prepared token dataset only
        "Training": _training(run, pngs),
        "Compression": _compression(run["compression"], pngs.get("compression")),
        "Export": _export(run["export"]),
        "Validation": _validation(run["validation"]),
        "Serving": _serving(run["serving"], pngs.get("serving_latency")),
        "Environment": _environment(run["environment"]),
        "Config": f"<pre>{escape(run['config_text'])}</pre>",
    }
    title = escape(f"tfbig report — {run['name']}")
    notes = "".join(f"<li>{escape(note)}</li>" for note in run["notes"])
    body = [f"<h1>{title}</h1>", kv_table(_headline(run))]
    if notes:
        body.append(f'<div class="notes"><p>Skipped while reading:</p><ul>{notes}</ul></div>')
    body += [f"<h2>{name}</h2>\n{content}" for name, content in sections.items() if content is not None]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{title}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


# -------------------------------------------------------------------- sections


def _headline(run: dict) -> dict:
    """What a reader wants first: which model, on what, how far, how good, where shipped."""
    config, export, environment = run["config"], run["export"] or {}, run["environment"] or {}
    model = _get(config, "model").get("name")
    params = _params(run)
    strategy = environment.get("strategy") or _get(config, "distribute").get("strategy")
    if strategy and environment.get("replicas"):
        strategy = f"{strategy} ({environment['replicas']} replicas)"
    last_eval = run["eval"][-1] if run["eval"] else {}
    return {
        "model": f"{model} ({params:,} params)" if model and isinstance(params, int) else model,
        "data set": _get(config, "data").get("name"),
        "tokenizer": _tokenizer(_get(run["data"], "tokenizer")),
        "strategy": strategy,
        "steps trained": _steps_trained(run),
        "final eval": _primary(last_eval) if last_eval else None,
        # Comparable across tokenizers, unlike perplexity per token.
        "eval bits per byte": last_eval.get("eval_bits_per_byte"),
        "exported version": export.get("version"),
    }


def _pipeline(stages: list[dict] | None) -> str:
    if stages is None:
        return _not_run(f"no {RunDir.pipeline.name}")
    return table(("stage", "status", "time", "summary", "error"),
                  [(s["stage"], s["status"], _seconds(s["seconds"]), _compact(s["summary"]), s["error"])
                   for s in stages])


def _data(data: dict) -> str:
    tokenizer = data["tokenizer"]
    rows = [(name, split.get("documents"), split.get("tokens"), _bytes(split.get("bytes")),
             _ratio_of(split.get("bytes"), split.get("tokens")))
            for name, split in data["splits"].items()]
    return (kv_table({"dataset": data["dataset"], "tokenizer": tokenizer.get("kind"),
                       "vocabulary": tokenizer.get("vocab_size"), "sha256": tokenizer.get("sha256"),
                       "source files": data["sources"]})
            + table(("split", "documents", "tokens", "text", "bytes per token"), rows))


def _tokenizer(tokenizer: dict) -> str | None:
    """`bpe, 1,024 pieces` for the headline."""
    if not tokenizer:
        return None
    return f"{_fmt(tokenizer.get('kind'))}, {_fmt(tokenizer.get('vocab_size'))} ids"


def _training(run: dict, pngs: dict[str, bytes]) -> str:
    if not run["train"] and not run["eval"]:
        return _not_run(f"no {RunDir.metrics.name} records")
    parts = [img(name, pngs[name]) for name in ("training", "eval", "throughput") if name in pngs]
    for label, records in (("Last train record", run["train"]), ("Last eval record", run["eval"])):
        if records:
            parts.append(f"<h3>{label}</h3>" + kv_table(_drop(records[-1], "time")))
    return "\n".join(parts)


def _compression(compression: dict | None, png: bytes | None) -> str:
    if compression is None:
        return _not_run(f"no compressed run ({RunDir.compression_json.name})")
    report = compression["report"]
    before, after = _get(report, "before"), _get(report, "after")
    formats = (("eval_accuracy", _fmt, _delta), ("eval_perplexity", _fmt, _delta),
               ("eval_loss", _fmt, _delta), ("size_bytes", _bytes, _smaller),
               ("gzip_bytes", _bytes, _smaller), ("nonzero_fraction", _fmt, _delta),
               ("params", _fmt, _delta), ("latency_ms", _ms, _faster))
    rows = [(key, show(b), show(a), change(b, a)) for key, show, change in formats
            if key in before or key in after for b, a in [(before.get(key), after.get(key))]]
    rows.append(("artifact", _artifact(before.get("artifact")),
                 _artifact(after.get("artifact")), ""))
    parts = [f"<p>method <b>{escape(_fmt(report.get('method')))}</b>, in "
             f"<code>{escape(compression['dir'])}</code></p>",
             table(("", "before", "after", "change"), rows)]
    if png:
        parts.append(img("compression", png))
    if compression["final_eval"]:
        parts.append("<h3>Fine-tuning: last eval record</h3>"
                     + kv_table(compression["final_eval"]))
    return "\n".join(parts)


def _export(export: dict | None) -> str:
    if export is None:
        return _not_run("no exported version")
    manifest = export["manifest"]
    training = _get(manifest, "training")
    parts = [kv_table({
        "version": export["version"], "path": export["path"], "created": manifest.get("created"),
        "tfbig": manifest.get("tfbig_version"), "tensorflow": manifest.get("tensorflow_version"),
        "trained step": training.get("step"), "eval metrics": training.get("eval_metrics"),
        "total size": _bytes(export["total_bytes"]),
    })]
    signatures = [(name, spec.get("method_name"), _tensors(spec.get("inputs")),
                   _tensors(spec.get("outputs")))
                  for name, spec in _get(manifest, "signatures").items() if isinstance(spec, dict)]
    parity = [(name, _fmt(check.get("max_abs_error")), _fmt(check.get("top1_agreement")))
              for name, check in _get(manifest, "parity").items() if isinstance(check, dict)]
    artifacts = [(kind, path, _bytes(export["artifact_bytes"].get(kind)))
                 for kind, path in _get(manifest, "artifacts").items()]
    for title, header, rows in (
            ("Signatures", ("signature", "method", "inputs", "outputs"), signatures),
            ("Export parity", ("artifact", "max abs error", "top-1 agreement"), parity),
            ("Artifacts", ("artifact", "path", "size"), artifacts)):
        if rows:
            parts.append(f"<h3>{title}</h3>" + table(header, rows))
    return "\n".join(parts)


def _validation(validation: dict | None) -> str:
    if validation is None:
        return _not_run("no validation checks")
    rows = [(c.get("signature"), c.get("output"), c.get("max_abs_error"), c.get("top1_agreement"))
            for c in validation["checks"] if isinstance(c, dict)]
    return (kv_table({"engine": validation.get("engine"), "version": validation.get("version"),
                       "load time": _seconds(validation.get("load_seconds"))})
            + table(("signature", "output", "max abs error", "top-1 agreement"), rows))


def _serving(serving: dict | None, png: bytes | None) -> str:
    if serving is None:
        return _not_run(f"no {RunDir.serving.name}")
    parts = [kv_table({key: serving.get(key) for key in ("engine", "model", "label", "target")})]
    smoke = _get(serving, "smoke")
    if smoke:
        parts.append("<h3>Smoke request</h3>" + kv_table(
            {**smoke, "latency_ms": _ms(smoke.get("latency_ms"))}))
    rows = [(r.get("protocol"), r.get("concurrency"), r.get("requests"), _ms(r.get("p50_ms")),
             _ms(r.get("p99_ms")), r.get("requests_per_s"), r.get("errors"))
            for r in serving.get("latency") or [] if isinstance(r, dict)]
    if rows:
        parts.append("<h3>Latency</h3>" + table(
            ("protocol", "concurrency", "requests", "p50", "p99", "requests/s", "errors"), rows))
    if png:
        parts.append(img("serving_latency", png))
    return "\n".join(parts)


def _environment(environment: dict | None) -> str:
    if environment is None:
        return _not_run(f"no {RunDir.environment.name}")
    packages = _get(environment, "packages")
    return (kv_table(_drop(environment, "packages"))
            + (table(("package", "version"), packages.items()) if packages else ""))


# ------------------------------------------------------------------- helpers


def _params(run: dict) -> int | None:
    """Parameter count, from the compression report (it measures the model it compressed)."""
    params = _get(_get(run["compression"], "report"), "before").get("params")
    return params if isinstance(params, int) else None


def _steps_trained(run: dict) -> int | None:
    """The last logged step; else the step the exported checkpoint was trained to."""
    steps = [r["step"] for r in run["train"] + run["eval"]]
    return max(steps) if steps else _get(_get(run["export"], "manifest"), "training").get("step")


def _primary(record: dict) -> str | None:
    """The headline eval metric: perplexity for language models, else accuracy, else loss."""
    for key in ("eval_perplexity", "eval_accuracy", "eval_loss"):
        if record.get(key) is not None:
            return f"{key.removeprefix('eval_')} {_fmt(record[key])} (step {record['step']})"
    return None


def _get(mapping, key: str) -> dict:
    """`mapping[key]` when both are objects, else {}: input files may be malformed."""
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return value if isinstance(value, dict) else {}


def _drop(mapping: dict, key: str) -> dict:
    return {k: v for k, v in mapping.items() if k != key}


def _not_run(why: str) -> str:
    return f'<p class="not-run">{NOT_RUN}: {escape(why)}</p>'


def img(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{escape(name)}" src="data:image/png;base64,{data}"></figure>'


def table(header, rows) -> str:
    """An HTML table; every cell is formatted with `_fmt` and escaped."""
    head = "".join(f"<th>{escape(_fmt(cell))}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(_fmt(cell))}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv_table(mapping: dict) -> str:
    """Two columns, name and value, for the keys that have a value."""
    rows = "".join(f"<tr><th>{escape(_fmt(k))}</th><td>{escape(_fmt(v))}</td></tr>"
                   for k, v in mapping.items() if v is not None)
    return f"<table>{rows}</table>"


def _fmt(value) -> str:
    """Readable text: thousands separators on ints, 4 significant digits on floats."""
    if value is None:
        return ""
    if isinstance(value, (bool, str)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    return json.dumps(value, separators=(", ", ": "))


def _compact(summary, limit: int = 80) -> str:
    """A stage summary as `key=value` pairs, each value cut at `limit` characters."""
    if not isinstance(summary, dict):
        return _fmt(summary)
    shown = ((k, _fmt(v)) for k, v in summary.items())
    return ", ".join(f"{k}={v if len(v) <= limit else v[:limit - 1] + '…'}" for k, v in shown)


def _tensors(specs) -> str:
    """`name: dtype [shape]` for each tensor of a signature, None dimensions shown as ?."""
    return "; ".join(
        f"{name}: {spec.get('dtype')} "
        f"[{', '.join('?' if d is None else str(d) for d in spec.get('shape') or [])}]"
        for name, spec in (specs or {}).items() if isinstance(spec, dict))


def _bytes(n) -> str:
    if not _is_number(n):
        return ""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _ms(value) -> str:
    return f"{value:.3g} ms" if _is_number(value) else ""


def _seconds(value) -> str:
    return f"{value:.3g} s" if _is_number(value) else ""


def _ratio_of(numerator, denominator) -> str:
    return f"{numerator / denominator:.3g}" if _is_number(numerator) and _is_number(denominator) and denominator else ""


def _delta(before, after) -> str:
    return f"{after - before:+.4g}" if _is_number(before) and _is_number(after) else ""


def _smaller(before, after) -> str:
    return _ratio(before, after, "smaller", "larger")


def _faster(before, after) -> str:
    return _ratio(before, after, "faster", "slower")


def _ratio(before, after, less: str, more: str) -> str:
    """"4.1x smaller" when `after` is the lesser, "1.2x larger" when the greater."""
    if not (_is_number(before) and _is_number(after)) or not (before and after):
        return ""
    if before == after:
        return "same"
    ratio, word = (before / after, less) if after < before else (after / before, more)
    return f"{ratio:.1f}x {word}" if ratio >= 1.1 else f"{ratio:.2f}x {word}"


def _artifact(artifact) -> str:
    """`tfbig compress` records {"format", "path"} (the file name tells TFLite variants apart)."""
    if not isinstance(artifact, dict):
        return _fmt(artifact)
    kind, name = _fmt(artifact.get("format")), os.path.basename(_fmt(artifact.get("path")))
    return f"{kind} ({name})" if name and name != kind else kind


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
