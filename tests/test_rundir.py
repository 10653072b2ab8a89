"""The run directory's names (tfbig.rundir): one object, and the README's table says the same."""

import os
import re

from readme import README
from tfbig.rundir import RunDir


def readme_entries() -> set[str]:
    """The names in the first column of the README's run-directory table (`models/NAME/` is
    the entry `models/`)."""
    with open(README, encoding="utf-8") as f:
        section = f.read().split("\n### The run directory\n", 1)[1].split("\n#", 1)[0]
    names = set()
    for row in re.findall(r"^\| (`.*?) \|", section, re.M):
        names.update(re.sub(r"/.*", "/", name) for name in re.findall(r"`([^`]+)`", row))
    return names


def test_readme_table_lists_exactly_the_run_directory_entries():
    assert readme_entries() == {entry.name for entry in RunDir.entries().values()}


def test_each_entry_is_a_path_in_the_run_and_documented(tmp_path):
    run = RunDir(str(tmp_path))
    for attribute, entry in RunDir.entries().items():
        assert getattr(run, attribute) == os.path.join(str(tmp_path), entry.name.rstrip("/"))
        assert entry.__doc__.startswith(f"`{entry.name}`: ") and len(entry.__doc__) > len(entry.name) + 10
    names = [entry.name for entry in RunDir.entries().values()]
    assert len(names) == len(set(names))
    assert run.model_base_path("digits") == os.path.join(str(tmp_path), "models", "digits")


def test_a_run_has_trained_once_it_has_checkpoints_or_metrics(tmp_path):
    run = RunDir(str(tmp_path))
    open(run.config, "w").close()
    assert not run.has_trained()
    open(run.metrics, "w").close()
    assert run.has_trained()
