"""The README's Python API examples run as written: train a digits run, prune it, export it.
(The client example runs against a server in test_serving.py.)"""

import os

import tfbig

from readme import python_block

CONFIGS = os.path.join(os.path.dirname(tfbig.__file__), "configs") + os.sep


def run_block(containing: str) -> dict:
    """Execute the README block that contains `containing`; its shipped-config paths are
    relative to the repository, so they are pointed at the installed package's configs."""
    namespace = {"__name__": "readme_example"}
    code = python_block(containing).replace("tfbig/configs/", CONFIGS)
    exec(compile(code, f"<README block: {containing}>", "exec"), namespace)
    return namespace


def test_readme_train_compress_and_export_examples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trained = run_block("from tfbig.train import train")["result"]
    assert trained.step == 200 and "eval_accuracy" in trained.eval_metrics
    pruned = run_block("from tfbig.compress import compress_run")["result"]
    assert pruned.after["gzip_bytes"] < pruned.before["gzip_bytes"]
    assert (tmp_path / "runs" / "digits-prune").is_dir()
    exported = run_block("from tfbig.export import export_run")["result"]  # the block checks the manifest
    assert exported.version == 1 and (tmp_path / "models" / "digits" / "1" / "saved_model.pb").is_file()
