"""The work data preparation hands to its processes, and what comes back.

Two passes over the corpus, each a list of independent jobs:

- `scan_file`: one input file -> its size, sha256, documents and text bytes
  per split, or why it is skipped; plus its candidates for the tokenizer
  sample. Results are small (the sample is bounded), so they come back.
- `tokenize_unit`: a work unit (whole files, or a byte range of a large
  plain .jsonl) -> a file of token ids and an index of its documents, written
  under the work directory and renamed into place when complete. A unit file
  that exists is finished work: an interrupted preparation skips it.

Units are planned from the input sizes alone, never from `--workers`, so a
resumed run may use another number of processes and still fit the old files.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import heapq
import os

import numpy as np

from tfbig.data.corpus import BadFile, document_digest, is_jsonl, read_documents
from tfbig.data.errors import DataError
from tfbig.data.shards import INDEX_DTYPE, duplicate_key, split_of
from tfbig.data.tokenizer import ByteTokenizer, SentencePieceTokenizer, Tokenizer

# A unit holds about 1/256 of the corpus, so 256 pieces of work balance well
# over the cores, within bounds: small units cost a file each, big ones
# lengthen the tail and what an interruption loses.
MIN_UNIT_BYTES = 256 << 10
MAX_UNIT_BYTES = 64 << 20


@dataclasses.dataclass(slots=True)  # one per input file is kept: a corpus may have millions
class FileScan:
    """What the first pass learns about one input file."""

    # Counts are plain fields, not a dict per split: a dict costs about 180 bytes a file.
    path: str
    bytes: int = 0
    sha256: str = ""
    train_documents: int = 0
    eval_documents: int = 0
    train_text_bytes: int = 0
    eval_text_bytes: int = 0
    skipped: str | None = None
    sample: list | tuple = ()  # (key, text) of train documents, until the parent has taken them

    def add_document(self, split: str, text_bytes: int) -> None:
        if split == "train":
            self.train_documents += 1
            self.train_text_bytes += text_bytes
        else:
            self.eval_documents += 1
            self.eval_text_bytes += text_bytes

    def documents(self, split: str) -> int:
        return self.train_documents if split == "train" else self.eval_documents

    def text_bytes(self, split: str) -> int:
        return self.train_text_bytes if split == "train" else self.eval_text_bytes


class Sample:
    """The documents of smallest duplicate key that together reach `budget` bytes of text.

    A document is dropped once the documents of smaller key already reach the
    budget, and every document of larger key after it; so the result does not
    depend on the order documents are offered in (files finish in any order),
    and memory stays at the budget plus one document.
    """

    def __init__(self, budget: int):
        self.budget = budget
        self._heap = []  # (-key, text, size): the largest key on top
        self._keys = set()
        self._total = 0
        self._limit = 1 << 64

    def offer(self, key: int, text: str) -> None:
        if key >= self._limit or key in self._keys:
            return
        size = len(text.encode("utf-8"))
        heapq.heappush(self._heap, (-key, text, size))
        self._keys.add(key)
        self._total += size
        while self._total - self._heap[0][2] >= self.budget:
            negative_key, _, dropped = heapq.heappop(self._heap)
            self._keys.discard(-negative_key)
            self._total -= dropped
            self._limit = -negative_key

    def items(self) -> list[tuple[int, str]]:
        """(key, text) in key order."""
        return sorted((-negative_key, text) for negative_key, text, _ in self._heap)


def scan_file(path: str, text_field: str, eval_fraction: float, sample_below: int,
              sample_bytes: int) -> FileScan:
    """First pass over one file; train documents with a key under `sample_below` are sample candidates."""
    scan = FileScan(path)
    sample = Sample(sample_bytes)
    digest = hashlib.sha256()
    try:
        scan.bytes = os.path.getsize(path)
        for text in read_documents(path, text_field=text_field, digest=digest):
            document = document_digest(text)
            split = split_of(document, eval_fraction)
            scan.add_document(split, len(text.encode("utf-8")))
            key = duplicate_key(document)
            if split == "train" and key < sample_below:
                sample.offer(key, text)
    except OSError as e:
        scan.skipped = f"unreadable: {e.strerror or e}"
    except BadFile as e:
        scan.skipped = str(e)
    else:
        scan.sha256 = digest.hexdigest()
        scan.sample = sample.items()
    return scan


def plan_units(sources: list[tuple[str, int]]) -> list[list[tuple[str, int, int | None]]]:
    """Units of work over (path, bytes) sources: lists of (path, start, end) parts, in input order.

    Consecutive small files share a unit; a plain .jsonl larger than a unit is
    cut into byte ranges (lines belong to the range they start in).
    """
    total = sum(size for _, size in sources)
    unit_bytes = min(MAX_UNIT_BYTES, max(MIN_UNIT_BYTES, total // 256))
    units, current, filled = [], [], 0
    for path, size in sources:
        if size > unit_bytes and is_jsonl(path) and not path.endswith(".gz"):
            if current:
                units.append(current)
                current, filled = [], 0
            units.extend([(path, start, min(start + unit_bytes, size))] for start in range(0, size, unit_bytes))
            continue
        current.append((path, 0, None))
        filled += size
        if filled >= unit_bytes:
            units.append(current)
            current, filled = [], 0
    if current:
        units.append(current)
    return units


@functools.lru_cache(maxsize=1)
def _tokenizer(model_path: str | None) -> Tokenizer:
    """The work's tokenizer, loaded once per process."""
    if model_path is None:
        return ByteTokenizer()
    with open(model_path, "rb") as f:
        return SentencePieceTokenizer(f.read())


def tokenize_unit(job: tuple[list, str], model_path: str | None, text_field: str) -> tuple[int, int]:
    """Second pass over one (unit, output) job: `output.ids` and `output.idx`; (documents, input bytes)."""
    unit, output = job
    tokenizer = _tokenizer(model_path)
    documents, records = 0, []
    with open(output + ".ids.partial", "wb") as ids, open(output + ".idx.partial", "wb") as index:
        for path, start, end in unit:
            try:
                for text in read_documents(path, text_field=text_field, start=start, end=end):
                    array = tokenizer.encode_array(text)
                    ids.write(array.tobytes())
                    records.append((document_digest(text), len(array), len(text.encode("utf-8"))))
                    if len(records) == 4096:  # a unit of tiny documents holds millions of them
                        documents += _write_records(records, index)
            except (BadFile, OSError) as e:
                raise DataError(f"{path} changed while it was being prepared ({e}); run again") from None
        documents += _write_records(records, index)
    os.replace(output + ".ids.partial", output + ".ids")
    os.replace(output + ".idx.partial", output + ".idx")  # last: the unit is done
    return documents, sum((end if end is not None else os.path.getsize(path)) - start
                          for path, start, end in unit)


def _write_records(records: list, index) -> int:
    np.array(records, dtype=INDEX_DTYPE).tofile(index)
    count = len(records)
    records.clear()
    return count
