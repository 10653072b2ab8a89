"""`tfbig data prepare`: a corpus of text files -> a tokenized, sharded dataset directory.

    DIR/spec.json              what is inside (format "tfbig-tokens/1"; sorted keys, no timestamps)
    DIR/tokenizer.model        the SentencePiece model (absent for the byte tokenizer)
    DIR/{train,eval}/shard-NNNNN.bin   little-endian ids of spec["dtype"]: documents, each
                               followed by the tokenizer's eos_id

The corpus can be far larger than memory, so it is streamed twice: a scan
(hashes, sizes, bad files, a bounded tokenizer sample), then tokenization of
work units in parallel processes, each writing its own file; one process
then copies the units' ids, in input order, into shards (`shards.py`).

Three promises, and how they are kept:
- Deterministic: every choice (sample, split, shard, duplicates, unit plan)
  derives from the inputs' contents and sizes, never from timing or
  `--workers`; the SentencePiece trainer runs on one thread.
- Atomic and resumable: everything is built in `.NAME.partial` beside the
  output and renamed into place at the end. The directory records the inputs
  (paths, sizes, mtimes) and options it was started for; run again with the
  same ones and the scan, the tokenizer and every finished unit are reused.
- Fork-safe and quick to start: no TensorFlow anywhere on this path, and
  workers start with forkserver (a parent that loaded TensorFlow must not fork).

Memory is flat in corpus size except for per-file records (~1.5 KB each:
scans, `sources` in spec.json) and one 8-byte key per distinct document (the
duplicate set, see `shards.write_shards`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import shutil
import sys

from tfbig.config import DataConfig
from tfbig.data.corpus import discover
from tfbig.data.errors import DataError
from tfbig.data.jobs import FileScan, Sample, plan_units, scan_file, tokenize_unit
from tfbig.data.shards import SPLITS, shard_count, write_shards
from tfbig.data.spec import DataSpec
from tfbig.data.tokenizer import (KINDS, MODEL_FILE, SPEC_FILE, SentencePieceTokenizer, Tokenizer,
                                  train_tokenizer)
from tfbig.errors import RunError

FORMAT = "tfbig-tokens/1"
DEFAULT_VOCAB_SIZE = 8192
# Enough text for SentencePiece to learn a good vocabulary of ~10^4 pieces
# (it trains ~1 MB/s on one thread), independent of the corpus size.
DEFAULT_SAMPLE_BYTES = 32 << 20
MAX_NAMED_SKIPS = 10


@dataclasses.dataclass(frozen=True)
class Options:
    """What, besides the inputs, decides the dataset's bytes (recorded in spec.json)."""

    tokenizer: str
    vocab_size: int
    special_tokens: tuple[str, ...]
    eval_fraction: float
    text_field: str
    sample_bytes: int

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "special_tokens": list(self.special_tokens)}


def prepare_dataset(paths, output: str, *, tokenizer: str = "bpe", vocab_size: int | None = None,
                    special_tokens=(), eval_fraction: float = 0.02, text_field: str = "text",
                    sample_bytes: int = DEFAULT_SAMPLE_BYTES, workers: int | None = None,
                    quiet: bool = False, replace: bool = False) -> dict:
    """Prepare `paths` (files, globs, directories) into the dataset directory `output`; its spec.

    An `output` that already holds the dataset of these inputs and options is
    up to date and returned as it is; one made from other inputs or options is
    an error, or with `replace` is replaced once the new one is complete.
    Raises DataError for an empty corpus, a vocabulary the text cannot fill,
    or an `output` holding anything else. Unless `quiet`, progress bars (on a
    terminal) and skipped files go to stderr.
    """
    options = make_options(tokenizer=tokenizer, vocab_size=vocab_size, special_tokens=special_tokens,
                           eval_fraction=eval_fraction, text_field=text_field, sample_bytes=sample_bytes)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if workers < 1:
        raise DataError(f"--workers must be at least 1, got {workers}")
    files = discover([paths] if isinstance(paths, str) else list(paths))
    existing = _existing_spec(output)
    work = _work_dir(output, files, options)
    try:
        return _prepare(files, output, existing, work, options, workers, quiet, replace)
    except DataError:  # wrong input: nothing worth resuming (an interruption keeps the work)
        shutil.rmtree(work, ignore_errors=True)
        raise


def _prepare(files: list[str], output: str, existing: dict | None, work: str, options: Options,
             workers: int, quiet: bool, replace: bool) -> dict:
    with _mapper(workers) as mapper:
        scans, sample = _saved_scans(work), None
        if scans is None:
            scans, sample = _scan(files, options, mapper, quiet)
        identity = _identity(scans, options)
        if existing is not None and (not replace or _same_identity(existing, identity)):
            return _up_to_date(existing, identity, output, work, quiet)
        skipped = identity["skipped"]
        _check_splits(scans, len(files), skipped)
        if skipped["count"] and not quiet:
            print(_skipped_line(skipped), file=sys.stderr)
        if sample is None:
            tokens = _saved_tokenizer(work, options)
        else:
            tokens = _train(sample, options)
            _save(work, tokens, scans)
        units = plan_units([(source["path"], source["bytes"]) for source in identity["sources"]])
        unit_files = [os.path.join(work, "units", f"{i:06d}") for i in range(len(units))]
        _tokenize(units, unit_files, work, tokens, options, mapper, quiet)
    return _finish(unit_files, work, output, tokens, scans, identity, options)


def planned_data_spec(cfg: DataConfig) -> DataSpec:
    """The examples the dataset `cfg.prepare` describes will give, before it is prepared: a
    tokenizer has exactly the vocabulary asked for, so `tfbig info` can size the model."""
    vocab_size = 257 if cfg.prepare.tokenizer == "byte" else cfg.prepare.vocab_size or DEFAULT_VOCAB_SIZE
    return DataSpec("lm", (cfg.seq_len,), "int32", vocab_size)


def prepared_spec(paths, output: str, **options) -> dict | None:
    """The spec of the dataset at `output` if it was made from `paths` as they are now (the
    same files, sizes and sha256) with these options (`make_options`' keywords); else None.

    What an up-to-date check needs, for less than preparing again costs: that
    scans every document too, this only hashes the files, and only when the
    file names and sizes all match.
    """
    options = make_options(**options)
    spec = _load_json(os.path.join(output, SPEC_FILE))
    try:
        if spec.get("format") != FORMAT or spec.get("options") != options.to_json():
            return None
        sources = {source["path"]: source for source in spec["sources"]}
        named_skips = {skip["path"] for skip in spec["skipped"]["first"]}
        files = discover([paths] if isinstance(paths, str) else list(paths))
        if (len(files) != len(sources) + spec["skipped"]["count"]
                or set(files) - set(sources) - named_skips or set(sources) - set(files)):
            return None
        if any(_size_and_mtime(path)[0] != source["bytes"] for path, source in sources.items()):
            return None
        if any(_sha256(path) != source["sha256"] for path, source in sources.items()):
            return None
    except (AttributeError, KeyError, TypeError):  # no spec, or not one this tfbig wrote
        return None
    return spec


def _sha256(path: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def make_options(*, tokenizer: str, vocab_size: int | None, special_tokens, eval_fraction: float,
                 text_field: str, sample_bytes: int) -> Options:
    """The options checked; DataError names the one that is wrong."""
    if tokenizer not in KINDS:
        raise DataError(f"--tokenizer {tokenizer!r} is not one of {', '.join(KINDS)}")
    if tokenizer == "byte":
        if vocab_size not in (None, 257):
            raise DataError(f"the byte tokenizer's vocabulary is 257 (256 bytes and the end of a "
                            f"document), not {vocab_size}; drop --vocab-size")
        if special_tokens:
            raise DataError("the byte tokenizer has no special tokens; use --tokenizer bpe or unigram")
    if not 0 < eval_fraction < 1:
        raise DataError(f"--eval-fraction must be between 0 and 1 (exclusive), got {eval_fraction}")
    if sample_bytes < 1:
        raise DataError(f"sample_bytes must be positive, got {sample_bytes}")
    vocab_size = 257 if tokenizer == "byte" else vocab_size or DEFAULT_VOCAB_SIZE
    return Options(tokenizer, vocab_size, tuple(special_tokens), float(eval_fraction), text_field,
                   int(sample_bytes))


def _existing_spec(output: str) -> dict | None:
    """The spec of a dataset already at `output`; None if nothing (or an empty directory) is there."""
    if not os.path.lexists(output) or (os.path.isdir(output) and not os.listdir(output)):
        return None
    spec = _load_json(os.path.join(output, SPEC_FILE)) if os.path.isdir(output) else None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise DataError(f"--output {output!r} exists and is not a tfbig dataset; "
                        f"choose another directory or remove it")
    return spec


def _same_identity(existing: dict, identity: dict) -> bool:
    return all(existing.get(key) == value for key, value in identity.items())


def _up_to_date(existing: dict, identity: dict, output: str, work: str, quiet: bool) -> dict:
    shutil.rmtree(work)
    if not _same_identity(existing, identity):
        raise DataError(f"--output {output!r} holds a dataset made from other inputs or options; "
                        f"remove it or choose another directory")
    if not quiet:
        print(f"{output} is up to date", file=sys.stderr)
    return existing


def _work_dir(output: str, files: list[str], options: Options) -> str:
    """`.NAME.partial` beside the output: reused when started for the same inputs and options."""
    parent, name = os.path.split(os.path.abspath(output))
    work = os.path.join(parent, f".{name}.partial")
    started_for = {"options": options.to_json(), "files": [[path, *_size_and_mtime(path)] for path in files]}
    if _load_json(os.path.join(work, "inputs.json")) != started_for:
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(os.path.join(work, "units"))
        _write_json(os.path.join(work, "inputs.json"), started_for)
    return work


def _size_and_mtime(path: str) -> tuple[int, int]:
    """(0, 0) for a file that cannot be seen (a broken link): the scan skips it, naming why."""
    try:
        stat = os.stat(path)
    except OSError:
        return 0, 0
    return stat.st_size, stat.st_mtime_ns


@contextlib.contextmanager
def _mapper(workers: int):
    """An ordered `map(function, iterable)` over `workers` processes (the caller's own for 1).

    A worker that dies (killed, out of memory, or started from a script that
    lacks the `if __name__ == "__main__":` guard new processes need) is one
    error, where multiprocessing.Pool would restart it forever.
    """
    if workers == 1:
        yield lambda function, iterable, chunksize=1: map(function, iterable)
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if context.get_start_method() == "forkserver":  # workers fork with the jobs' imports done
        context.set_forkserver_preload([scan_file.__module__])
    executor = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
    try:
        yield executor.map
    except concurrent.futures.process.BrokenProcessPool:
        raise RunError("a data preparation process died (killed, out of memory, or started from a script "
                       "without an `if __name__ == \"__main__\":` guard); run again to resume") from None
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


class _Progress:
    """A tqdm bar over input bytes (MB/s, ETA) that also shows documents/s; off when not a terminal."""

    def __init__(self, description: str, total: int, quiet: bool):
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=description, unit="B", unit_scale=True, file=sys.stderr,
                         disable=True if quiet else None, dynamic_ncols=True)
        self._documents = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._bar.close()

    def update(self, input_bytes: int, documents: int) -> None:
        self._documents += documents
        if not self._bar.disable:
            rate = self._documents / max(self._bar.format_dict["elapsed"], 1e-6)
            self._bar.set_postfix_str(f"{rate:,.0f} docs/s", refresh=False)
        self._bar.update(input_bytes)


def _scan(files: list[str], options: Options, mapper, quiet: bool) -> tuple[list[FileScan], Sample]:
    """First pass: every file's FileScan, and the tokenizer's training sample."""
    total = sum(_size_and_mtime(path)[0] for path in files)
    # Candidates are the train documents whose key falls in the lowest part of
    # the key range sized to hold the budget twice over; `Sample` keeps exactly
    # the budget. The byte tokenizer needs no sample.
    below = min(1 << 64, (2 * options.sample_bytes << 64) // max(total, 1))
    if options.tokenizer == "byte":
        below = 0
    job = functools.partial(scan_file, text_field=options.text_field, eval_fraction=options.eval_fraction,
                            sample_below=below, sample_bytes=options.sample_bytes)
    sample, scans = Sample(options.sample_bytes), []
    with _Progress("scan", total, quiet) as bar:
        # Files go to the workers in chunks: one round trip each costs more than scanning a small file.
        for scan in mapper(job, files, chunksize=max(1, min(64, len(files) // 64))):
            for key, text in scan.sample:
                sample.offer(key, text)
            scans.append(dataclasses.replace(scan, sample=()))
            bar.update(scan.bytes, scan.train_documents + scan.eval_documents)
    return scans, sample


def _saved_scans(work: str) -> list[FileScan] | None:
    saved = _load_json(os.path.join(work, "scan.json"))
    try:
        return None if saved is None else [FileScan(**scan) for scan in saved]
    except TypeError:  # written by a tfbig that kept other fields: scan again
        return None


def _identity(scans: list[FileScan], options: Options) -> dict:
    """The parts of spec.json that say what a dataset was made from: equal means up to date."""
    skipped = [{"path": s.path, "reason": s.skipped} for s in scans if s.skipped]
    sources = [{"path": s.path, "bytes": s.bytes, "sha256": s.sha256} for s in scans if not s.skipped]
    return {"sources": sources,
            "skipped": {"count": len(skipped), "first": skipped[:MAX_NAMED_SKIPS]},
            "options": options.to_json()}


def _check_splits(scans: list[FileScan], file_count: int, skipped: dict) -> None:
    documents = {split: sum(s.documents(split) for s in scans) for split in SPLITS}
    if not any(documents.values()):
        reason = f"; {_skipped_line(skipped)}" if skipped["count"] else ""
        raise DataError(f"the corpus is empty: no text in its {file_count} files{reason}")
    for split, count in documents.items():
        if not count:
            raise DataError(f"the {split} split is empty: {sum(documents.values())} documents are too "
                            f"few for this --eval-fraction; change it or give more text")


def _skipped_line(skipped: dict) -> str:
    named = "; ".join(f"{s['path']} ({s['reason']})" for s in skipped["first"][:3])
    more = f"; and {skipped['count'] - 3} more" if skipped["count"] > 3 else ""
    return f"skipped {skipped['count']} unreadable, binary or non-UTF-8 files: {named}{more}"


def _train(sample: Sample, options: Options) -> Tokenizer:
    documents = [text for _, text in sample.items()]
    if options.tokenizer != "byte" and not documents:
        raise DataError(f"the tokenizer sample is empty; raise sample_bytes above {options.sample_bytes}")
    return train_tokenizer(documents, kind=options.tokenizer, vocab_size=options.vocab_size,
                           special_tokens=options.special_tokens)


def _save(work: str, tokenizer: Tokenizer, scans: list[FileScan]) -> None:
    """The tokenizer, then the scan: a saved scan means a saved tokenizer."""
    if tokenizer.model_proto() is not None:
        _write_bytes(os.path.join(work, MODEL_FILE), tokenizer.model_proto())
    _write_json(os.path.join(work, "scan.json"), [dataclasses.asdict(scan) for scan in scans])


def _saved_tokenizer(work: str, options: Options) -> Tokenizer:
    if options.tokenizer == "byte":
        return train_tokenizer((), kind="byte")
    with open(os.path.join(work, MODEL_FILE), "rb") as f:
        return SentencePieceTokenizer(f.read())


def _tokenize(units: list, unit_files: list[str], work: str, tokenizer: Tokenizer, options: Options,
              mapper, quiet: bool) -> None:
    """Second pass: the units not already finished by an earlier, interrupted run."""
    todo = [(unit, path) for unit, path in zip(units, unit_files) if not os.path.exists(path + ".idx")]
    model = os.path.join(work, MODEL_FILE) if tokenizer.model_proto() is not None else None
    job = functools.partial(tokenize_unit, model_path=model, text_field=options.text_field)
    total = sum(_part_bytes(part) for unit, _ in todo for part in unit)
    with _Progress("tokenize", total, quiet) as bar:
        for documents, input_bytes in mapper(job, todo):
            bar.update(input_bytes, documents)


def _part_bytes(part) -> int:
    path, start, end = part
    return (os.path.getsize(path) if end is None else end) - start


def _finish(unit_files: list[str], work: str, output: str, tokenizer: Tokenizer, scans: list[FileScan],
            identity: dict, options: Options) -> dict:
    """Shards, tokenizer and spec.json in the work directory, then renamed to `output`."""
    staged = os.path.join(work, "dataset")
    shutil.rmtree(staged, ignore_errors=True)  # a merge cut short
    os.makedirs(staged)
    counts = {split: shard_count(sum(s.text_bytes(split) for s in scans)) for split in SPLITS}
    splits, duplicates = write_shards(unit_files, staged, counts=counts, dtype=tokenizer.dtype,
                                      eos_id=tokenizer.eos_id, eval_fraction=options.eval_fraction)
    proto = tokenizer.model_proto()
    if proto is not None:
        _write_bytes(os.path.join(staged, MODEL_FILE), proto)
    spec = {
        "format": FORMAT,
        "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id,
                      "file": MODEL_FILE if proto is not None else None,
                      "sha256": hashlib.sha256(proto).hexdigest() if proto is not None else None,
                      "special_tokens": list(options.special_tokens)},
        "dtype": tokenizer.dtype,
        "splits": splits,
        "duplicates_dropped": duplicates,
        **identity,
    }
    _write_json(os.path.join(staged, SPEC_FILE), spec)
    if os.path.isdir(output):
        if os.listdir(output):  # the dataset this one replaces (`replace`): out of the way first
            os.rename(output, os.path.join(work, "replaced"))
        else:
            os.rmdir(output)  # empty, as _existing_spec found it
    os.rename(staged, output)
    shutil.rmtree(work)
    return spec


def _load_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json(path: str, value) -> None:
    """Streamed (a corpus of a million files has a scan.json of hundreds of MB), then renamed."""
    with open(path + ".partial", "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(path + ".partial", path)


def _write_bytes(path: str, data: bytes) -> None:
    """Whole or not at all: an interrupted run never leaves half a file to be reused."""
    with open(path + ".partial", "wb") as f:
        f.write(data)
    os.replace(path + ".partial", path)
