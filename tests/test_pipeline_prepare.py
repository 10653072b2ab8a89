"""The pipeline's prepare stage: `data.prepare` -> a token dataset, skipped while it is up to
date, made again when a source or an option changes; the report shows the tokenizer and
bits per byte. The corpus is real text (standard library source and pydoc topics, corpus.py)."""

import json
import os

import pytest

from tfbig.config import ConfigError, replace
from tfbig.data.prepare import prepared_spec
from tfbig.pipeline import run_pipeline
from tfbig.pipeline.context import PipelineContext
from tfbig.pipeline.stages import STAGES
from tfbig.report import collect_run, write_report
from tfbig.summaries import PrepareSummary

from corpus import write_corpus
from runs import make_config

PREPARE = {"tokenizer": "bpe", "vocab_size": 400, "eval_fraction": 0.2, "sample_bytes": 200_000,
           "workers": 1}


def prepare_config(run_dir, corpus, **prepare):
    data = {"name": "tokens", "seq_len": 32,
            "prepare": {"sources": [str(corpus), "stdlib:json/*.py"], **PREPARE, **prepare}}
    return make_config(run_dir, data=data, steps=4, steps_per_execution=2, log_every=2,
                       checkpoint_every=4, eval_every=0, eval_steps=2)


def statuses(run_dir) -> dict:
    with open(os.path.join(run_dir, "pipeline.json"), encoding="utf-8") as f:
        return {name: entry["status"] for name, entry in json.load(f)["stages"].items()}


@pytest.fixture
def corpus(tmp_path):
    write_corpus(tmp_path / "corpus", files=8, topics=20)
    return tmp_path / "corpus"


def test_prepare_runs_then_is_skipped_and_runs_again_when_a_source_or_option_changes(tmp_path, corpus):
    run_dir = tmp_path / "run"
    config = prepare_config(run_dir, corpus)
    quiet = dict(until="prepare", say=lambda _: None)

    assert run_pipeline(config, **quiet).statuses == {"prepare": "done"}
    dataset = run_dir / "dataset"  # data.paths names no directory: the run's own
    with open(dataset / "spec.json", encoding="utf-8") as f:
        spec = json.load(f)
    assert spec["tokenizer"]["kind"] == "bpe" and spec["tokenizer"]["vocab_size"] == 400
    assert any(source["path"].endswith(os.path.join("json", "decoder.py")) for source in spec["sources"])
    assert run_pipeline(config, **quiet).statuses == {"prepare": "skipped"}

    with open(corpus / "tricky.txt", "a", encoding="utf-8") as f:
        f.write("one more line\n")  # same name, new size and hash
    assert run_pipeline(config, **quiet).statuses == {"prepare": "done"}
    assert run_pipeline(replace(config, {"data.prepare.vocab_size": 420}), **quiet).statuses == {"prepare": "done"}
    with open(dataset / "spec.json", encoding="utf-8") as f:
        assert json.load(f)["tokenizer"]["vocab_size"] == 420
    assert sorted(os.listdir(tmp_path / "run")) == ["dataset", "pipeline.json"]  # nothing half-made left


def test_a_named_dataset_directory_and_one_that_holds_something_else(tmp_path, corpus):
    named = tmp_path / "data" / "corpus-tokens"
    config = replace(prepare_config(tmp_path / "run", corpus), {"data.paths": [str(named)]})
    assert run_pipeline(config, until="prepare", say=lambda _: None).statuses == {"prepare": "done"}
    assert os.path.isfile(named / "spec.json") and not os.path.exists(tmp_path / "run" / "dataset")

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    from tfbig.pipeline import PipelineError

    with pytest.raises(PipelineError, match="stage prepare failed: .*exists and is not a tfbig dataset"):
        run_pipeline(replace(config, {"data.paths": [str(other)]}), until="prepare", say=lambda _: None)
    assert (other / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("change, message", [
    ({"data.name": "text"}, "data.prepare: the pipeline prepares a token dataset for data.name 'tokens'"),
    ({"data.prepare.sources": []}, "data.prepare.sources: name the corpus to prepare"),
    ({"data.paths": ["a", "b"]}, "data.paths: data.prepare writes one dataset directory, got 2"),
    ({"data.prepare.tokenizer": "wordpiece"}, "data.prepare.tokenizer: 'wordpiece' (str) is not allowed"),
])
def test_a_wrong_prepare_section_is_one_clear_config_error(tmp_path, corpus, change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        replace(prepare_config(tmp_path / "run", corpus), change)


def test_no_prepare_section_is_a_skipped_stage(tmp_path):
    config = make_config(tmp_path / "run")
    assert run_pipeline(config, until="prepare", say=lambda _: None).statuses == {"prepare": "skipped"}
    assert STAGES[0].up_to_date(PipelineContext(config=config, state=None, model_name="m",
                                                base_path="b")) == PrepareSummary()


def test_prepared_spec_is_none_for_another_source_set(tmp_path, corpus):
    run_pipeline(prepare_config(tmp_path / "run", corpus), until="prepare", say=lambda _: None)
    options = dict(tokenizer="bpe", vocab_size=400, special_tokens=(), eval_fraction=0.2,
                   text_field="text", sample_bytes=200_000)
    sources = [str(corpus), "stdlib:json/*.py"]
    dataset = str(tmp_path / "run" / "dataset")
    assert prepared_spec(sources, dataset, **options)["tokenizer"]["vocab_size"] == 400
    assert prepared_spec(sources[:1], dataset, **options) is None  # fewer files
    assert prepared_spec(sources, dataset, **{**options, "eval_fraction": 0.1}) is None
    assert prepared_spec(sources, str(tmp_path / "nothing"), **options) is None


@pytest.mark.slow
def test_a_run_on_prepared_data_reports_the_tokenizer_and_bits_per_byte(tmp_path, corpus):
    run_dir = tmp_path / "run"
    result = run_pipeline(prepare_config(run_dir, corpus), until="evaluate", say=lambda _: None)
    assert result.statuses == {"prepare": "done", "train": "done", "evaluate": "done"}
    page = open(write_report(str(run_dir)).html, encoding="utf-8").read()
    collected = collect_run(str(run_dir))
    tokenizer = collected["data"]["tokenizer"]
    assert tokenizer["kind"] == "bpe" and tokenizer["vocab_size"] == 400 and len(tokenizer["sha256"]) == 64
    assert tokenizer["sha256"] in page and "bpe, 400 ids" in page
    bits_per_byte = collected["eval"][-1]["eval_bits_per_byte"]
    assert 0 < bits_per_byte < 16
    assert f"<th>eval bits per byte</th><td>{bits_per_byte:.4g}</td>" in page
    assert [row["stage"] for row in collected["stages"]][:3] == ["prepare", "train", "evaluate"]


def test_the_quickstart_prepares_the_standard_library_and_is_a_byte_model_one_override_away(tmp_path):
    from tfbig.cli import main
    from tfbig.config import load_config
    from tfbig.data.corpus import discover

    quickstart = load_config("quickstart")
    assert quickstart.data.name == "tokens" and quickstart.data.prepare.tokenizer == "bpe"
    assert len(discover(quickstart.data.prepare.sources)) > 100  # found from the running Python
    byte = load_config("quickstart", ["data={name: text, seq_len: 64, eval_fraction: 0.05}"])
    assert byte.data.name == "text" and byte.data.prepare is None
    # `tfbig train` alone cannot find a dataset only the pipeline makes: it says so.
    assert main(["train", "quickstart", "--output-dir", str(tmp_path / "run")]) == 2


def test_the_pipeline_record_reads_back_typed_and_ignores_a_summary_of_another_shape(tmp_path):
    from tfbig.pipeline import STAGES as NAMES
    from tfbig.pipeline.state import PipelineState
    from tfbig.summaries import ExportSummary

    state = PipelineState(str(tmp_path), model_name="m", model_base_path="b", order=NAMES)
    export = ExportSummary(version=2, path="/b/2", signatures=["serving_default"], artifacts={},
                           trained_checkpoint="ckpt-4")
    state.record("export", status="done", started="t", seconds=1.0, summary=export)
    again = PipelineState(str(tmp_path), model_name="m", model_base_path="b", order=NAMES)
    assert again.summary(ExportSummary) == export
    assert again.data["order"][0] == "prepare"
    again.data["stages"]["export"]["summary"]["version"] = "2"  # as another tfbig might write it
    assert again.summary(ExportSummary) is None  # the stage then checks its outputs afresh
