"""The README's Python API examples run as written: train a digits run, prune it, export it.
(The client and curl examples run against a server in test_serving.py, the lifecycle example
in test_lifecycle.py.)"""

import os

import pytest

import tfbig

from readme import readme_block, run_block

# The examples name the shipped configs by their path in the repository.
CONFIGS = {"tfbig/configs/": os.path.join(os.path.dirname(tfbig.__file__), "configs") + os.sep}


@pytest.mark.slow
def test_readme_train_compress_and_export_examples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trained = run_block(readme_block("from tfbig.train import train", CONFIGS))["result"]
    assert trained.step == 200 and "eval_accuracy" in trained.eval_metrics
    pruned = run_block(readme_block("from tfbig.compress import compress_run"))["result"]
    assert pruned.after["gzip_bytes"] < pruned.before["gzip_bytes"]
    assert (tmp_path / "runs" / "digits-prune").is_dir()
    exported = run_block(readme_block("from tfbig.export import export_run"))["result"]  # checks its manifest
    assert exported.version == 1 and (tmp_path / "models" / "digits" / "1" / "saved_model.pb").is_file()
