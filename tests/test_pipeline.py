"""`tfbig pipeline` end to end on tiny configs: every stage, resuming, a failed validation."""

import json
import os

import pytest

from tfbig.cli import main
from tfbig.config import replace, save_config
from tfbig.export import read_manifest
from tfbig.export.signing import generate_key_pair, load_public_key, signature_problem
from tfbig.lifecycle import ModelRegistry
from tfbig.pipeline import STAGES, PipelineError, run_pipeline

from runs import make_config


def gpt_pipeline_config(run_dir):
    config = make_config(run_dir, strategy="mirrored", steps=20, checkpoint_every=20, eval_every=20)
    return replace(config, {
        "compress": {"method": "prune", "steps": 10, "prune": {"target_sparsity": 0.5}},
        "pipeline": {"model_name": "tinygpt", "engine": "embedded", "latency_requests": 8,
                     "latency_concurrency": [1, 4]},
    })


def stage_statuses(run_dir) -> dict:
    with open(os.path.join(run_dir, "pipeline.json"), encoding="utf-8") as f:
        return {name: entry["status"] for name, entry in json.load(f)["stages"].items()}


@pytest.mark.slow
def test_gpt_pipeline_runs_every_stage_then_skips_them_when_rerun(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    (tmp_path / "tokens.txt").write_text("pipeline-token\n")  # every request of the pipeline's bears it
    private_key, public_key = generate_key_pair(str(tmp_path / "keys"))
    config = replace(gpt_pipeline_config("run"),  # relative, as scripts/quickstart.sh gives it
                     {"pipeline.auth_token_file": "tokens.txt", "pipeline.sign_key": private_key})
    said = []
    result = run_pipeline(config, say=said.append)

    assert result.statuses == {**{stage: "done" for stage in STAGES}, "prepare": "skipped"}  # byte text
    assert result.version == 1 and result.model_name == "tinygpt"
    registry = ModelRegistry(result.model_base_path)
    assert registry.labels() == {"canary": 1, "stable": 1}
    assert registry.validation(1)["passed"]
    # Exported signed; validation would have refused it unsigned or changed.
    assert signature_problem(registry.version_path(1), load_public_key(public_key)) is None
    # The exported model is the pruned one, fine-tuned from the trained run.
    with open(run_dir / "compressed" / "report.json", encoding="utf-8") as f:
        assert json.load(f)["after"]["nonzero_fraction"] < 0.8
    with open(run_dir / "serving.json", encoding="utf-8") as f:
        serving = json.load(f)
    assert serving["smoke"]["signature"] == "generate" and len(serving["smoke"]["response"]) > 2
    points = {(p["protocol"], p["concurrency"]): p for p in serving["latency"]}
    assert set(points) == {("grpc", 1), ("grpc", 4), ("rest", 1), ("rest", 4)}
    assert all(p["errors"] == 0 and p["p50_ms"] > 0 for p in points.values())
    with open(result.report, encoding="utf-8") as f:
        assert "tinygpt" in f.read()
    with open(run_dir / "report" / "report.json", encoding="utf-8") as f:
        collected = json.load(f)
    assert collected["compression"]["report"]["method"] == "prune"
    assert collected["export"]["manifest"]["training"]["step"] == 10
    assert collected["serving"]["smoke"] == serving["smoke"]
    assert any(line.startswith("[pipeline] promote: done") for line in said)
    serve_log = (run_dir / "serve.log").read_text()
    assert "bearer tokens from" in serve_log and "pipeline-token" not in serve_log
    assert f"versions signed by {run_dir / 'verify_key.pem'} only" in serve_log  # the key's public half
    assert load_public_key(str(run_dir / "verify_key.pem")).public_bytes_raw() == \
        load_public_key(public_key).public_bytes_raw()

    # Again, from the command line: nothing to redo; it says how to serve the model again.
    config_file = tmp_path / "pipeline.yaml"
    save_config(config, config_file)
    capsys.readouterr()
    assert main(["pipeline", str(config_file)]) == 0
    assert stage_statuses(run_dir) == {**{stage: "skipped" for stage in STAGES}, "report": "done"}
    assert ModelRegistry(result.model_base_path).versions() == [1]
    out = capsys.readouterr().out
    assert f"--model_config_file={registry.config_file}" in out
    assert "localhost:8501/v1/models/tinygpt/labels/stable:predict" in out


@pytest.mark.slow
def test_cli_refuses_what_the_pipeline_cannot_run(tmp_path, capsys):
    quickstart = ["pipeline", "tfbig/configs/quickstart.yaml", "--output-dir", str(tmp_path / "run")]
    assert main([*quickstart, "--until", "deploy"]) == 2
    assert "--until 'deploy': choose one of prepare, train, evaluate" in capsys.readouterr().err
    assert main([*quickstart, "--set", "distribute.strategy=multi_worker"]) == 2
    assert "train under `tfbig launch` first" in capsys.readouterr().err
    assert main([*quickstart, "--set", "pipeline.model_name=../x"]) == 2
    assert "model name '../x' is not allowed" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")
    assert main(["report", str(tmp_path), "--no-open"]) == 2
    assert "has no config.yaml" in capsys.readouterr().err


@pytest.mark.slow
def test_a_failed_validation_stops_the_pipeline_and_promotes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    config = replace(make_config(run_dir, model={"name": "mlp", "hidden_units": [16]},
                                 data={"name": "digits"}, steps=10, batch_size=32),
                     {"pipeline": {"engine": "embedded", "latency_requests": 4,
                                   "latency_concurrency": [1]},
                      "compress": {"method": "prune", "steps": 10}})
    first = run_pipeline(config, say=lambda _: None)
    registry = ModelRegistry(first.model_base_path)
    assert registry.labels() == {"canary": 1, "stable": 1}
    models_config = open(registry.config_file, encoding="utf-8").read()

    # Training moves on: the compressed run is made afresh from the new checkpoint, then exported.
    longer = replace(config, {"train.steps": 20})
    assert run_pipeline(longer, until="export", say=lambda _: None).version == 2
    with open(run_dir / "compressed" / "compressed_from.txt", encoding="utf-8") as f:
        assert f.read().endswith("ckpt-20")
    assert read_manifest(os.path.join(registry.base_path, "2"))["training"]["step"] == 10
    with open(os.path.join(registry.base_path, "2", "variables", "variables.index"), "ab") as f:
        f.write(b"tampered")
    with pytest.raises(PipelineError, match="stage validate failed: version 2 failed validation.*"
                                            "variables/variables.index: sha256 differs"):
        run_pipeline(longer, say=lambda _: None)

    statuses = stage_statuses(run_dir)
    assert statuses["validate"] == "failed" and statuses["export"] == "skipped"
    assert registry.labels() == {"canary": 1, "stable": 1}
    assert open(registry.config_file, encoding="utf-8").read() == models_config
    assert not registry.validation(2)["passed"]
    assert os.path.exists(run_dir / "report" / "index.html")  # the report shows the failure
