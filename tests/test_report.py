"""`tfbig report`: the HTML page, its figures and report.json, built from small
hand-written run directories (no TensorFlow: the report must not need it)."""

import base64
import json
import os
import re
import subprocess
import sys

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tfbig.report import ReportError, collect_run, write_report
from tfbig.summaries import BY_STAGE as STAGES
from tfbig.summaries import (CompressSummary, ExportSummary, PrepareSummary, PromoteSummary, RecordError,
                             TrainSummary, ValidateSummary, read_summary)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONFIG = """\
model:
  name: mlp
  hidden_units: [32, 32]
data:
  name: digits
train:
  steps: 30
  batch_size: 64
  precision: float32
  optimizer: {name: adam, learning_rate: 0.003}
distribute:
  strategy: mirrored
compress:
  method: prune
"""
TRAIN = [{"step": s, "time": 1700000000.0 + s, "loss": loss, "accuracy": acc,
          "learning_rate": 0.003, "examples_per_s": 5000.0 + s}
         for s, loss, acc in ((10, 2.1, 0.3), (20, 1.2, 0.6), (30, 0.7, 0.8))]
EVAL = [{"step": 20, "time": 1700000021.0, "eval_loss": 1.3, "eval_accuracy": 0.58},
        {"step": 30, "time": 1700000031.0, "eval_loss": 0.8, "eval_accuracy": 0.8125}]
P50_MS = 3.4567
MAX_ABS_ERROR = 1.25e-06
FAILED_ERROR = "canary: p99 latency 51 ms > bound <50 ms> & rolled back"


def write(path, content) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(content if isinstance(content, str) else json.dumps(content))


def tiny_png() -> bytes:
    import io

    figure = Figure(figsize=(1, 1), dpi=20)
    FigureCanvasAgg(figure)
    figure.add_subplot().plot([0, 1], [1, 0])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def make_trained_run(run_dir, metrics_lines=None) -> str:
    """A run that was only trained: config.yaml and metrics.jsonl."""
    write(os.path.join(run_dir, "config.yaml"), CONFIG)
    lines = metrics_lines or [json.dumps(r) for r in TRAIN[:2] + EVAL[:1] + TRAIN[2:] + EVAL[1:]]
    write(os.path.join(run_dir, "metrics.jsonl"), "\n".join(lines) + "\n")
    return str(run_dir)


def make_full_run(run_dir) -> str:
    """A run through the whole pipeline, with the canary stage failed."""
    make_trained_run(run_dir)
    measured = {"artifact": {"format": "saved_model", "path": "/x/saved_model"},
                "eval_loss": 0.8, "eval_accuracy": 0.8125, "size_bytes": 4 * 1024 * 1024,
                "gzip_bytes": 3 * 1024 * 1024, "nonzero_fraction": 1.0, "latency_ms": 0.5,
                "params": 5450}
    after = {**measured, "artifact": {"format": "saved_model", "path": "/y/saved_model"},
             "eval_accuracy": 0.80, "gzip_bytes": 1024 * 1024, "nonzero_fraction": 0.25}
    compressed = os.path.join(run_dir, "pruned")
    write(os.path.join(compressed, "report.json"),
          {"format": "tfbig-compress-report/1", "method": "prune", "before": measured,
           "after": after, "details": {"pruned": ["dense"]}})
    with open(os.path.join(compressed, "report.png"), "wb") as f:
        f.write(tiny_png())
    write(os.path.join(compressed, "metrics.jsonl"),
          json.dumps({"step": 40, "time": 1.0, "eval_loss": 0.81, "eval_accuracy": 0.7971}) + "\n")
    version = os.path.join(run_dir, "export", "3")
    write(os.path.join(version, "saved_model.pb"), "x" * 2048)
    write(os.path.join(version, "assets.extra", "model.tflite"), "y" * 1000)
    write(os.path.join(version, "assets.extra", "tfbig_manifest.json"), {
        "tfbig_version": "0.1.0", "tensorflow_version": "2.21.0", "created": "2025-01-01T00:00:00",
        "training": {"step": 30, "eval_metrics": {"eval_accuracy": 0.8125}},
        "signatures": {"serving_default": {
            "method_name": "tensorflow/serving/predict",
            "inputs": {"inputs": {"dtype": "float32", "shape": [None, 64]}},
            "outputs": {"logits": {"dtype": "float32", "shape": [None, 10]}}}},
        "artifacts": {"tflite": "assets.extra/model.tflite"},
        "parity": {"saved_model:serving_default:logits": {"max_abs_error": MAX_ABS_ERROR,
                                                          "top1_agreement": 1.0}},
        "files": {"saved_model.pb": "0" * 64}})
    summaries = [
        (12.5, TrainSummary(checkpoint="ckpt-30", step=30)),
        (4.0, CompressSummary(method="prune", output_dir="pruned")),
        (2.0, ExportSummary(version=3, path=os.path.abspath(version), signatures=["serving_default"],
                            artifacts={"tflite": "assets.extra/model.tflite"}, trained_checkpoint="ckpt-30")),
        (1.0, ValidateSummary(version=3, engine="embedded", load_seconds=0.42, checks=[
            {"signature": "serving_default", "output": "logits", "max_abs_error": 3.5e-07,
             "top1_agreement": 1.0}])),
    ]
    stages = {summary.stage: {"status": "done", "seconds": seconds, "summary": summary.to_json()}
              for seconds, summary in summaries}
    stages["canary"] = {"status": "failed", "seconds": 9.0, "summary": {}, "error": FAILED_ERROR}
    write(os.path.join(run_dir, "pipeline.json"), {
        "format": "tfbig-pipeline/1", "model_name": "quickstart", "model_base_path": version,
        "order": list(STAGES), "stages": stages})
    write(os.path.join(run_dir, "environment.json"), {
        "python": "3.12.3", "platform": "Linux-x86_64", "cpu_count": 2,
        "packages": {"tensorflow": "2.21.0", "tf_keras": "2.21.0"},
        "devices": ["/device:CPU:0", "/device:CPU:1"], "strategy": "mirrored", "replicas": 2})
    write(os.path.join(run_dir, "serving.json"), {
        "engine": "embedded", "model": "quickstart", "label": "canary", "target": "localhost:8500",
        "smoke": {"signature": "serving_default", "request": "{}", "response": "{}",
                  "latency_ms": 1.5},
        "latency": [{"protocol": p, "concurrency": c, "requests": 100, "p50_ms": P50_MS * c,
                     "p99_ms": 2 * P50_MS * c, "requests_per_s": 280.0 * c, "errors": 0}
                    for p in ("grpc", "rest") for c in (1, 4)]})
    return str(run_dir)


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(data)
            for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def read(path) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_full_run_report_is_self_contained_and_shows_every_section(tmp_path):
    files = write_report(make_full_run(tmp_path / "run"))
    page = read(files.html)
    assert files.html == str(tmp_path / "run" / "report" / "index.html")
    assert set(files.pngs) == {"training", "eval", "throughput", "serving_latency", "compression"}
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', page)
    assert "<script" not in page
    pngs = embedded_pngs(page)
    assert len(pngs) == len(files.pngs)
    assert all(png.startswith(PNG_SIGNATURE) for png in pngs)
    for path in files.pngs.values():
        with open(path, "rb") as f:
            assert f.read() in pngs
    with open(tmp_path / "run" / "pruned" / "report.png", "rb") as f:
        assert f.read() in pngs  # embedded as drawn by `tfbig compress`, not redrawn
    assert "tfbig report — run" in page
    assert f"{P50_MS:.3g} ms" in page
    assert f"{MAX_ABS_ERROR:.4g}" in page
    assert "3.0x smaller" in page  # gzip 3 MiB -> 1 MiB
    assert "mlp (5,450 params)" in page and "mirrored (2 replicas)" in page
    assert "0.7971" in page  # the compressed run's fine-tuning eval
    assert "tensorflow/serving/predict" in page and "inputs: float32 [?, 64]" in page
    assert "model.tflite" in page and "1000 B" in page
    assert "/device:CPU:1" in page and "hidden_units: [32, 32]" in page
    assert "not run" not in page


def test_failed_stage_error_is_escaped_and_missing_stages_are_pending(tmp_path):
    page = read(write_report(make_full_run(tmp_path / "run")).html)
    assert "&lt;50 ms&gt; &amp; rolled back" in page
    assert "<50 ms>" not in page
    rows = re.findall(r"<tr><td>(\w+)</td><td>(\w+)</td>", page)
    assert ("canary", "failed") in rows and ("promote", "pending") in rows
    assert ("evaluate", "pending") in rows and ("train", "done") in rows


def test_report_json_round_trips_the_collected_sections(tmp_path):
    run_dir = make_full_run(tmp_path / "run")
    files = write_report(run_dir)
    with open(files.json, encoding="utf-8") as f:
        data = json.load(f)
    assert data == json.loads(json.dumps({**collect_run(run_dir), "figures": data["figures"]}))
    assert data["figures"]["serving_latency"] == "serving_latency.png"
    assert [r["step"] for r in data["train"]] == [10, 20, 30]
    assert data["eval"][-1]["eval_accuracy"] == 0.8125
    assert data["export"]["version"] == 3 and data["export"]["artifact_bytes"] == {"tflite": 1000}
    assert data["compression"]["report"]["method"] == "prune"
    assert data["validation"]["checks"][0]["max_abs_error"] == 3.5e-07
    assert data["serving"]["latency"][0]["p50_ms"] == P50_MS
    assert data["pipeline"]["stages"]["canary"]["error"] == FAILED_ERROR
    assert data["notes"] == []


def test_trained_only_run_has_training_figures_and_not_run_elsewhere(tmp_path):
    files = write_report(make_trained_run(tmp_path / "run"))
    page = read(files.html)
    assert set(files.pngs) == {"training", "eval", "throughput"}
    assert len(embedded_pngs(page)) == 3
    for section in ("Pipeline", "Compression", "Export", "Validation", "Serving", "Environment"):
        after = page.split(f"<h2>{section}</h2>", 1)[1]
        assert after.lstrip().startswith('<p class="not-run">not run'), section
    assert "accuracy 0.8125 (step 30)" in page


def test_language_model_run_plots_perplexity_and_tokens(tmp_path):
    lines = [json.dumps({"step": s, "time": 0.0, "loss": 3.0 / s, "tokens_per_s": 1e5,
                         "examples_per_s": 800.0}) for s in (1, 2, 3)]
    lines.append(json.dumps({"step": 3, "time": 0.0, "eval_loss": None, "eval_perplexity": 9.5}))
    files = write_report(make_trained_run(tmp_path / "run", lines))
    assert {"training", "eval", "throughput"} <= set(files.pngs)
    assert "perplexity 9.5 (step 3)" in read(files.html)


def test_malformed_inputs_are_skipped_with_a_note(tmp_path):
    lines = [json.dumps(TRAIN[0]), '{"step": 20, "loss": 1.', "[1, 2]", json.dumps(TRAIN[1])]
    run_dir = make_trained_run(tmp_path / "run", lines)
    write(os.path.join(run_dir, "serving.json"), "{not json")
    files = write_report(run_dir)
    page = read(files.html)
    assert "metrics.jsonl line 2: not a metrics record" in page
    assert "metrics.jsonl line 3" in page and "serving.json: not readable JSON" in page
    assert [r["step"] for r in collect_run(run_dir)["train"]] == [10, 20]
    assert "training" in files.pngs


def test_missing_config_raises_report_error_naming_the_path(tmp_path):
    with pytest.raises(ReportError, match=re.escape(str(tmp_path))) as info:
        write_report(str(tmp_path))
    assert "tfbig train CONFIG --output-dir" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert not os.path.exists(tmp_path / "report")


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path):
    run_dir = make_full_run(tmp_path / "run")
    write_report(run_dir)
    files = write_report(run_dir)  # a second report replaces the first
    names = sorted(os.listdir(os.path.dirname(files.html)))
    assert names == sorted(["index.html", "report.json"]
                           + [f"{name}.png" for name in files.pngs])


def test_importing_the_report_does_not_import_tensorflow():
    code = "import tfbig.report, sys; assert 'tensorflow' not in sys.modules, 'tensorflow'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_summary_written_by_another_tfbig_is_a_note_and_the_rest_still_renders(tmp_path):
    run_dir = make_full_run(tmp_path / "run")
    path = os.path.join(run_dir, "pipeline.json")
    with open(path, encoding="utf-8") as f:
        pipeline = json.load(f)
    pipeline["stages"]["export"]["summary"] = {"version": 3, "exported_to": "elsewhere"}  # old field names
    pipeline["stages"]["validate"]["summary"]["load_seconds"] = "fast"
    write(path, pipeline)
    collected = collect_run(run_dir)
    assert collected["notes"] == [
        "pipeline.json: the export stage's summary has unknown fields exported_to and no artifacts, path, "
        "signatures, trained_checkpoint (written by another tfbig version?), skipped",
        "pipeline.json: the validate stage's summary has load_seconds='fast', expected float, skipped"]
    assert collected["export"]["version"] == 3  # found as RUN/export's latest version instead
    assert collected["validation"] is None
    assert "the export stage&#x27;s summary has unknown fields" in read(write_report(run_dir).html)


@pytest.mark.parametrize("summary", [
    PrepareSummary(dataset="/d", tokenizer={"kind": "bpe", "vocab_size": 400}, train_tokens=9, eval_tokens=2),
    PrepareSummary(),
    TrainSummary(checkpoint=None, step=0, metrics={"eval_loss": 1.5}),
    CompressSummary(method="none"),
    ExportSummary(version=1, path="/m/1", signatures=["generate"], artifacts={}, trained_checkpoint="c"),
    PromoteSummary(labels={"stable": 2}, removed_versions=[1]),
], ids=lambda summary: summary.stage)
def test_summaries_round_trip_through_json(summary):
    assert read_summary(summary.stage, json.loads(json.dumps(summary.to_json()))) == summary
    with pytest.raises(RecordError, match=f"{summary.stage} stage's summary has unknown fields later"):
        read_summary(summary.stage, {**summary.to_json(), "later": 1})


def test_a_run_on_a_prepared_directory_shows_its_tokenizer_without_the_pipeline(tmp_path):
    from corpus import write_prepared

    spec = write_prepared(str(tmp_path / "tokens"))
    run_dir = str(tmp_path / "run")
    write(os.path.join(run_dir, "config.yaml"), CONFIG.replace(
        "data:\n  name: digits", f"data:\n  name: tokens\n  paths: [{tmp_path / 'tokens'}]"))
    write(os.path.join(run_dir, "metrics.jsonl"), json.dumps(
        {"step": 30, "time": 1.0, "eval_loss": 1.2, "eval_perplexity": 3.3, "eval_bits_per_byte": 1.731}) + "\n")
    data = collect_run(run_dir)["data"]
    assert data["tokenizer"]["kind"] == "byte" and data["splits"]["eval"]["tokens"] == spec["splits"]["eval"]["tokens"]
    page = read(write_report(run_dir).html)
    assert "<th>tokenizer</th><td>byte, 257 ids</td>" in page
    assert "<th>eval bits per byte</th><td>1.731</td>" in page
