"""Model lifecycle: validation in a real server, labels, rollback under load, pruning."""

import os
import threading

import numpy as np
import pytest

from tfbig.cli import main
from tfbig.export import export_run
from tfbig.export.manifest import read_manifest, write_manifest
from tfbig.export.warmup import EXPECTED_FILE, read_warmup, write_prediction_logs
from tfbig.lifecycle import LifecycleError, ModelRegistry, validate_version
from tfbig.serving import Client, codec
from tfbig.serving.process import ServerProcess
from tfbig.train import train

from readme import readme_block, run_block
from runs import make_config
from serving_models import digits_images, labelled_version

MLP = {"name": "mlp", "hidden_units": [16]}


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    """Versions 1 and 2 of a digits MLP, trained for different numbers of steps."""
    root = tmp_path_factory.mktemp("lifecycle")
    base = root / "models" / "digits"
    run = root / "run"
    for steps in (10, 30):
        train(make_config(run, model=MLP, data={"name": "digits"}, steps=steps, batch_size=32,
                          checkpoint_every=10))
        export_run(str(run), str(base))
    return str(base)


def copy_of(base, tmp_path) -> ModelRegistry:
    import shutil

    target = tmp_path / "digits"
    shutil.copytree(base, target)
    return ModelRegistry(str(target))


@pytest.mark.slow
def test_promote_needs_a_passing_validation_of_the_version_as_it_is(two_versions, tmp_path):
    registry = copy_of(two_versions, tmp_path)
    with pytest.raises(LifecycleError, match="has not been validated"):
        registry.promote(1, "stable")
    result = validate_version(registry, 1, engine="embedded")
    assert result.passed, result.problems
    # Every signature of the classifier was compared with what the trained model answered.
    assert {c["signature"] for c in result.checks} == {"serving_default", "classify", "regress"}
    assert all(c["max_abs_error"] <= 1e-5 for c in result.checks)
    assert registry.promote(1, "stable") == {"stable": 1}
    # A version edited after its validation must be validated again.
    with open(os.path.join(registry.base_path, "1", "saved_model.pb"), "ab") as f:
        f.write(b"\0")
    assert registry.validation(1) is None
    with pytest.raises(LifecycleError, match="has not been validated"):
        registry.promote(1, "canary")


@pytest.mark.slow
def test_validation_compares_the_servers_answers_with_the_trained_model(two_versions, tmp_path):
    """A version whose files are consistent but whose model answers differently fails."""
    registry = copy_of(two_versions, tmp_path)
    path = os.path.join(registry.base_path, "2")
    logs = read_warmup(os.path.join(path, EXPECTED_FILE))
    for log in logs:  # what the "trained model" answered, shifted
        outputs = log.predict_log.response.outputs
        if "logits" in outputs:
            outputs["logits"].CopyFrom(codec.to_tensor_proto(codec.from_tensor_proto(outputs["logits"]) + 1.0))
    write_prediction_logs(path, EXPECTED_FILE, logs)
    manifest = read_manifest(path)
    del manifest["files"]
    write_manifest(path, manifest)  # consistent files: only the served answers can tell

    result = validate_version(registry, 2, engine="embedded")
    assert not result.passed
    assert any("served signature 'serving_default' output 'logits'" in p for p in result.problems)
    with pytest.raises(LifecycleError, match="failed validation"):
        registry.promote(2, "stable")
    assert registry.labels() == {}


@pytest.mark.slow
def test_a_version_the_server_cannot_load_fails_validation(two_versions, tmp_path):
    registry = copy_of(two_versions, tmp_path)
    os.remove(os.path.join(registry.base_path, "1", "saved_model.pb"))
    manifest = read_manifest(os.path.join(registry.base_path, "1"))
    del manifest["files"]
    write_manifest(os.path.join(registry.base_path, "1"), manifest)
    result = validate_version(registry, 1, engine="embedded")
    assert not result.passed
    assert "could not load version 1" in result.problems[0]


@pytest.mark.slow
def test_rollback_under_load_fails_no_request(two_versions, tmp_path):
    registry = copy_of(two_versions, tmp_path)
    for version in (1, 2):  # validation itself is tested above; here the labels are
        registry.record_validation(version, {"passed": True})
    registry.promote(1, "stable")
    images = digits_images(4)
    flags = [f"--model_config_file={registry.config_file}", "--model_config_file_poll_wait_seconds=1"]
    with ServerProcess(flags, model_name="digits", log_path=str(tmp_path / "serve.log"),
                       engine="embedded") as server, Client(server.grpc_target) as client:
        before = client.predict("digits", images, label="stable")
        stop, failures, answered = threading.Event(), [], []

        def hammer():
            with Client(server.grpc_target, max_retries=0) as mine:
                while not stop.is_set():
                    try:
                        answered.append(mine.predict("digits", images, label="stable")["logits"])
                    except Exception as error:  # any failure counts
                        failures.append(error)

        threads = [threading.Thread(target=hammer) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            registry.promote(2, "stable", server=server.grpc_target)
            assert labelled_version(server.grpc_target, "digits", "stable") == 2
            promoted = client.predict("digits", images, label="stable")
            assert registry.rollback("stable", server=server.grpc_target) == {"stable": 1}
            assert labelled_version(server.grpc_target, "digits", "stable") == 1
            after = client.predict("digits", images, label="stable")
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        states = {s["version"]: s["state"] for s in client.status("digits")}
    assert failures == []
    assert len(answered) > 20
    np.testing.assert_allclose(after["logits"], before["logits"], rtol=1e-6)
    assert not np.allclose(before["logits"], promoted["logits"])
    # The rolled-back version is unloaded: only labelled versions are served.
    assert states[1] == "AVAILABLE" and states[2] == "END"
    events = registry.record()["events"]
    assert [(e["action"], e["version"], e["previous"]) for e in events] == [
        ("promote", 1, None), ("promote", 2, 1), ("rollback", 1, 2)]


def test_rollback_needs_history_and_prune_old_keeps_what_labels_need(two_versions, tmp_path):
    registry = copy_of(two_versions, tmp_path)
    export_run(os.path.join(os.path.dirname(os.path.dirname(two_versions)), "run"), registry.base_path)
    for version in (1, 2, 3):
        registry.record_validation(version, {"passed": True})
    registry.promote(2, "stable")
    with pytest.raises(LifecycleError, match="no earlier version"):
        registry.rollback("stable")
    registry.promote(3, "stable")
    # 3 is stable, 2 its rollback target: only 1 may go, whatever --keep says.
    assert registry.prune_old(1, dry_run=True) == [1]
    assert registry.versions() == [1, 2, 3]
    assert registry.prune_old(1) == [1]
    assert registry.versions() == [2, 3]
    assert "1" not in registry.record()["validations"]
    assert not [name for name in os.listdir(registry.base_path) if name.startswith(".retired")]
    assert registry.rollback("stable") == {"stable": 2}


@pytest.mark.slow
def test_models_cli_lists_verifies_and_promotes(two_versions, tmp_path, capsys):
    registry = copy_of(two_versions, tmp_path)
    base = registry.base_path
    assert main(["models", "promote", "1", "--model-base-path", base]) == 2
    assert "has not been validated" in capsys.readouterr().err
    assert main(["models", "verify", "1", "--model-base-path", base, "--engine", "embedded"]) == 0
    assert "version 1 passed" in capsys.readouterr().out
    assert main(["models", "promote", "1", "--model-base-path", base, "--label", "stable"]) == 0
    capsys.readouterr()
    assert main(["models", "list", "--model-base-path", base]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[:3] == ["VERSION", "LABELS", "VALIDATED"]
    rows = {line.split()[0]: line.split() for line in listing[1:]}
    assert rows["1"][1:3] == ["stable", "yes"] and rows["2"][1:3] == ["-", "-"]
    assert main(["models", "list", "--model-base-path", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_readme_lifecycle_example_promotes_then_rolls_back_on_a_running_server(two_versions, tmp_path):
    """The README's lifecycle example as written, on a model whose version 1 is stable and
    served (where a pipeline run leaves it), with the test's path and server address."""
    registry = copy_of(two_versions, tmp_path)
    registry.record_validation(1, {"passed": True})
    registry.promote(1, "stable")
    flags = [f"--model_config_file={registry.config_file}", "--model_config_file_poll_wait_seconds=1"]
    with ServerProcess(flags, model_name="digits", log_path=str(tmp_path / "serve.log"),
                       engine="embedded") as server:
        run_block(readme_block("from tfbig.lifecycle import", {
            "runs/quickstart/models/quickstart": registry.base_path, "localhost:8500": server.grpc_target}))
        assert labelled_version(server.grpc_target, "digits", "stable") == 1
    assert registry.validation(2)["passed"]
    assert [(e["action"], e["version"], e["previous"]) for e in registry.record()["events"]] == [
        ("promote", 1, None), ("promote", 2, 1), ("rollback", 1, 2)]
