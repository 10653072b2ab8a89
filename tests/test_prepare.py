"""`tfbig data prepare` on real text: contents, determinism, resume, memory, bad input.

The corpus is ~0.6 MB of standard library source and pydoc topics (see
corpus.py), so each preparation takes a couple of seconds; runs that must be
killed or measured happen in subprocesses.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tfbig
from tfbig.cli import main
from tfbig.data.corpus import document_digest, read_documents
from tfbig.data.errors import DataError
from tfbig.data.jobs import Sample, plan_units
from tfbig.data.prepare import prepare_dataset
from tfbig.data.shards import split_of
from tfbig.data.tokenizer import load_tokenizer

from corpus import TRICKY, pydoc_topics, write_corpus
from readme import readme_block, run_block

REPO = os.path.dirname(os.path.dirname(os.path.abspath(tfbig.__file__)))
# Small enough to train in a second, and the sample smaller than the corpus.
OPTIONS = dict(vocab_size=400, eval_fraction=0.2, sample_bytes=200_000, special_tokens=["<|sep|>"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The corpus directory, its distinct good documents, and what is wrong with the rest."""
    root = tmp_path_factory.mktemp("corpus")
    directory = str(root / "corpus")
    documents = write_corpus(directory)
    shutil.copy(os.path.join(directory, "tricky.txt"), os.path.join(directory, "tricky-copy.md"))
    bad = {
        "binary.txt": b"text\0with a NUL",
        "latin1.md": "caf\xe9".encode("latin-1"),
        "broken.py.gz": b"not gzip at all",
        "lines.jsonl": b'{"text": "fine"}\n{"text": 3}\n',
    }
    for name, data in bad.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
    os.symlink("nowhere", os.path.join(directory, "gone.txt"))  # unreadable, even by root
    os.makedirs(os.path.join(directory, ".hidden"))
    with open(os.path.join(directory, ".hidden", "ignored.txt"), "w") as f:
        f.write("not part of the corpus")
    return directory, documents


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("prepared") / "data")
    return output, prepare_dataset([corpus[0]], output, workers=1, quiet=True, **OPTIONS)


def tree(directory) -> dict:
    """Every file under `directory`: relative path -> sha256."""
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                files[os.path.relpath(os.path.join(root, name), directory)] = hashlib.sha256(f.read()).hexdigest()
    return files


def shard_documents(output, spec, split) -> list[list[int]]:
    """The documents of a split as lists of ids, read the way a trainer would."""
    eos = spec["tokenizer"]["eos_id"]
    documents = []
    for shard in spec["splits"][split]["shards"]:
        ids = np.fromfile(os.path.join(output, shard["file"]), dtype=np.dtype(spec["dtype"]).newbyteorder("<"))
        assert len(ids) == shard["tokens"] and (len(ids) == 0 or ids[-1] == eos)
        ends = np.flatnonzero(ids == eos)
        documents += [d.tolist() for d in np.split(ids, ends + 1)[:-1]]
        assert len(ends) == shard["documents"]
    return [d[:-1] for d in documents]


def test_the_dataset_holds_every_distinct_document_once_and_round_trips(corpus, prepared):
    _, documents = corpus
    output, spec = prepared
    assert spec["format"] == "tfbig-tokens/1" and spec["dtype"] == "uint16"
    assert spec["tokenizer"] == {"kind": "bpe", "vocab_size": 400, "eos_id": 2, "file": "tokenizer.model",
                                 "sha256": tree(output)["tokenizer.model"], "special_tokens": ["<|sep|>"]}
    tokenizer = load_tokenizer(output)
    distinct = set(documents)
    assert TRICKY in distinct and len(documents) - len(distinct) == 0
    assert spec["duplicates_dropped"] == 1  # tricky-copy.md
    found = {}
    for split in ("train", "eval"):
        texts = [tokenizer.decode(ids) for ids in shard_documents(output, spec, split)]
        assert len(texts) == len(set(texts)) == spec["splits"][split]["documents"] > 0
        assert sum(len(t.encode("utf-8")) for t in texts) == spec["splits"][split]["bytes"]
        assert all(split_of(document_digest(t), 0.2) == split for t in texts)
        found[split] = set(texts)
    # decode(encode(text)) == text for every document of both splits, and nothing else is there.
    assert found["train"] | found["eval"] == distinct and not found["train"] & found["eval"]
    train = spec["splits"]["train"]
    assert len(train["shards"]) > 1 and all(shard["documents"] > 0 for shard in train["shards"])
    assert train["tokens"] == sum(s["tokens"] for s in train["shards"])
    assert set(tree(output)) == {"spec.json", "tokenizer.model"} | {
        s["file"] for split in spec["splits"].values() for s in split["shards"]}
    assert tree(output)[train["shards"][0]["file"]] == train["shards"][0]["sha256"]


def test_a_large_jsonl_is_read_in_parts_that_hold_every_line_once(tmp_path):
    texts = pydoc_topics(300)
    path = tmp_path / "big.jsonl"
    lines = [json.dumps({"text": t}) + "\n" for t in texts]
    path.write_text("".join(lines))
    units = plan_units([("small.txt", 10), (str(path), path.stat().st_size)])
    assert units[0] == [("small.txt", 0, None)] and len(units) > 2
    assert [t for (unit,) in units[1:] for t in read_documents(*unit[:1], start=unit[1], end=unit[2])] == texts
    line_start = len(lines[0].encode()) + len(lines[1].encode())  # a part that starts exactly on a line
    assert next(read_documents(str(path), start=line_start)) == texts[2]
    assert next(read_documents(str(path), start=line_start + 1)) == texts[3]
    assert list(read_documents(str(path), start=0, end=1)) == texts[:1]


def test_the_tokenizer_sample_does_not_depend_on_the_order_documents_come_in():
    documents = [(document_digest(t), t) for t in pydoc_topics(200)]
    samples = []
    for order in (documents, documents[::-1], sorted(documents, key=lambda d: d[1])):
        sample = Sample(50_000)
        for digest, text in order:
            sample.offer(int.from_bytes(digest[:8], "little"), text)
        samples.append(sample.items())
    assert samples[0] == samples[1] == samples[2]
    size = sum(len(t.encode()) for _, t in samples[0])
    assert size >= 50_000 and size - len(samples[0][-1][1].encode()) < 50_000  # the budget, just reached
    keys = sorted({int.from_bytes(d[:8], "little") for d, _ in documents})  # pydoc has duplicates
    assert [k for k, _ in samples[0]] == keys[:len(samples[0])]


def test_bad_files_are_skipped_and_named(corpus, prepared):
    directory, _ = corpus
    _, spec = prepared
    reasons = {os.path.basename(s["path"]): s["reason"] for s in spec["skipped"]["first"]}
    assert spec["skipped"]["count"] == 5 and reasons == {
        "binary.txt": "binary (holds NUL bytes)",
        "broken.py.gz": reasons["broken.py.gz"],
        "gone.txt": "unreadable: No such file or directory",
        "latin1.md": "not UTF-8 (byte 3: b'\\xe9')",
        "lines.jsonl": "line 2 has no string field 'text'",
    }
    assert reasons["broken.py.gz"].startswith("unreadable: Not a gzipped file")
    sources = [s["path"] for s in spec["sources"]]
    assert sources == sorted(sources) and len(sources) == 33
    assert all(".hidden" not in path and path not in reasons for path in sources)
    with open(os.path.join(directory, "tricky.txt"), "rb") as f:
        data = f.read()
    (tricky,) = [s for s in spec["sources"] if s["path"].endswith("tricky.txt")]
    assert tricky == {"path": tricky["path"], "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.slow
def test_the_bytes_do_not_depend_on_workers_and_a_second_run_is_up_to_date(corpus, prepared, tmp_path,
                                                                              capsys):
    output, spec = prepared
    again = str(tmp_path / "data")
    assert prepare_dataset([corpus[0]], again, workers=2, quiet=True, **OPTIONS) == spec
    assert tree(again) == tree(output)
    with open(os.path.join(output, "spec.json")) as f:
        assert json.load(f) == spec
    assert prepare_dataset([corpus[0]], again, workers=2, **OPTIONS) == spec
    assert f"{again} is up to date" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["data"]  # no work directory left behind


RUN = """\
import sys, time
import tfbig.data.prepare as prepare
from tfbig.data import jobs

def slow_unit(*args, **kwargs):  # finishes a unit, then gives the test time to kill the run
    result = jobs.tokenize_unit(*args, **kwargs)
    time.sleep(30)
    return result

prepare.tokenize_unit = slow_unit
prepare.prepare_dataset([sys.argv[1]], sys.argv[2], workers=1, quiet=True, **{options})
"""


@pytest.mark.slow
def test_a_killed_run_resumes_where_it_stopped_and_gives_the_same_bytes(corpus, prepared, tmp_path, monkeypatch):
    output = str(tmp_path / "data")
    units = tmp_path / ".data.partial" / "units"
    run = subprocess.Popen([sys.executable, "-c", RUN.format(options=OPTIONS), corpus[0], output],
                           env={**os.environ, "PYTHONPATH": REPO}, start_new_session=True)
    try:
        deadline = time.time() + 60
        while not (units.is_dir() and any(name.endswith(".idx") for name in os.listdir(units))):
            assert run.poll() is None and time.time() < deadline, "the run ended before finishing a unit"
            time.sleep(0.05)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    assert not os.path.exists(output)
    done = sorted(name for name in os.listdir(units) if name.endswith(".idx"))
    assert done == ["000000.idx"]

    import tfbig.data.prepare as prepare
    from tfbig.data import jobs

    tokenized = []
    monkeypatch.setattr(prepare, "tokenize_unit", lambda job, **kw: tokenized.append(job) or
                        jobs.tokenize_unit(job, **kw))
    assert prepare_dataset([corpus[0]], output, workers=1, quiet=True, **OPTIONS) == prepared[1]
    assert tokenized and not any(path.endswith("000000") for _, path in tokenized)  # unit 0 was reused
    assert tree(output) == tree(prepared[0])
    assert not (tmp_path / ".data.partial").exists()


# The process's own peak RSS (VmHWM): ru_maxrss would report the parent's peak
# instead, which Linux carries across fork and exec, and this parent loaded TensorFlow.
MEASURE = """\
import json, re, sys
from tfbig.data.prepare import prepare_dataset
spec = prepare_dataset([sys.argv[1]], sys.argv[2], workers=1, quiet=True, **{options})
with open("/proc/self/status") as f:
    peak_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", f.read()).group(1))
print(json.dumps({{"rss_kb": peak_kb,
                  "documents": spec["splits"]["train"]["documents"] + spec["splits"]["eval"]["documents"],
                  "tensorflow": "tensorflow" in sys.modules}}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak RSS from /proc")
def test_peak_memory_does_not_grow_with_the_corpus(tmp_path):
    """Prepare a corpus and one ten times larger (ten differently prefixed copies): same peak RSS."""
    small, large = tmp_path / "small", tmp_path / "large"
    write_corpus(small)
    for copy in range(10):
        write_corpus(large / str(copy), prefix=f"# copy {copy}\n")
    peaks = []
    for corpus in (small, large):
        result = subprocess.run([sys.executable, "-c", MEASURE.format(options=OPTIONS), str(corpus),
                                 str(tmp_path / f"{corpus.name}-data")], env={**os.environ, "PYTHONPATH": REPO},
                                capture_output=True, text=True, timeout=300, check=True)
        peaks.append(json.loads(result.stdout))
    assert peaks[1]["documents"] == 10 * peaks[0]["documents"]
    assert not peaks[0]["tensorflow"] and not peaks[1]["tensorflow"]
    assert peaks[1]["rss_kb"] < 1.1 * peaks[0]["rss_kb"], peaks


def test_an_empty_corpus_is_one_clear_error(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "binary.py").write_bytes(b"\0\1\2")
    with pytest.raises(DataError, match=r"the corpus is empty: no text in its 2 files; skipped 1 .*binary.py"):
        prepare_dataset([str(tmp_path)], str(tmp_path / "out"), workers=1, quiet=True)
    assert sorted(os.listdir(tmp_path)) == ["binary.py", "empty.txt"]
    with pytest.raises(DataError, match="'nothing/here' does not exist"):
        prepare_dataset(["nothing/here"], str(tmp_path / "out"), quiet=True)


def test_a_vocabulary_larger_than_the_text_supports_is_one_clear_error(tmp_path):
    (tmp_path / "a.txt").write_text(TRICKY)
    (tmp_path / "b.txt").write_text("one more short document")
    with pytest.raises(DataError, match="vocabulary size 5000 is larger than the text supports"):
        prepare_dataset([str(tmp_path)], str(tmp_path / "out"), vocab_size=5000, eval_fraction=0.5,
                        workers=1, quiet=True)
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def test_an_output_holding_something_else_is_refused(prepared, corpus, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="exists and is not a tfbig dataset"):
        prepare_dataset([corpus[0]], str(tmp_path), workers=1, quiet=True, **OPTIONS)
    with pytest.raises(DataError, match="holds a dataset made from other inputs or options"):
        prepare_dataset([corpus[0]], prepared[0], workers=1, quiet=True, **{**OPTIONS, "vocab_size": 500})


@pytest.mark.slow
def test_the_command_line_needs_no_tensorflow_and_reports_errors_in_one_line(corpus, tmp_path):
    """A `tensorflow` that fails to import proves the command and its workers never load it."""
    poisoned = tmp_path / "poison" / "tensorflow"
    poisoned.mkdir(parents=True)
    (poisoned / "__init__.py").write_text("raise ImportError('tfbig data prepare imported tensorflow')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(poisoned.parent), REPO])}
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    for i in range(6):
        (tiny / f"{i}.txt").write_text(f"document {i}: " + TRICKY * (i + 1))
    command = [sys.executable, "-m", "tfbig.cli", "data", "prepare", str(tiny), "--tokenizer", "byte",
               "--eval-fraction", "0.5", "--workers", "2", "--output"]
    done = subprocess.run(command + [str(tmp_path / "out")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "byte tokenizer of 257 ids; train " in done.stdout and done.stderr == ""
    failed = subprocess.run(command + [str(tiny)], env=env, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2
    assert failed.stderr == f"tfbig data: error: --output {str(tiny)!r} exists and is not a tfbig dataset; " \
                            f"choose another directory or remove it\n"


def test_cli_options_reach_prepare(tmp_path, capsys):
    texts = [f"{i}: " + "é" * i for i in range(10)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
    code = main(["data", "prepare", str(tmp_path / "a.jsonl"), "--output", str(tmp_path / "out"),
                 "--tokenizer", "byte", "--text-field", "body", "--eval-fraction", "0.5", "--workers", "1"])
    spec = json.loads((tmp_path / "out" / "spec.json").read_text())
    assert code == 0 and spec["options"]["text_field"] == "body" and spec["tokenizer"]["kind"] == "byte"
    assert spec["splits"]["train"]["bytes"] + spec["splits"]["eval"]["bytes"] == len("".join(texts).encode())
    assert main(["data", "prepare", "x", "--output", "y", "--vocab-size", "300", "--tokenizer", "byte"]) == 2
    assert "tfbig data: error: the byte tokenizer's vocabulary is 257" in capsys.readouterr().err


def test_the_readme_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_block(readme_block("from tfbig.data.prepare import prepare_dataset",
                           {'if __name__ == "__main__":': "if True:  # run as the README's script"}))
    spec = json.loads((tmp_path / "data" / "stdlib-small" / "spec.json").read_text())
    assert spec["tokenizer"]["vocab_size"] == 1000 and len(spec["sources"]) > 20
