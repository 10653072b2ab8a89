"""Where a document goes: its split, its shard, or nowhere (a duplicate).

Every decision is a function of the document's content digest (16 bytes,
`corpus.document_digest`), never of the order work finished in or of how many
processes did it: the same document always lands in the same split and shard,
so a re-prepared corpus, an added file or a change of `--workers` moves
nothing else, and eval text never leaks into train. Bytes 0-8 of the digest
are the duplicate key, bytes 8-12 choose the split, bytes 12-16 the shard.

Shards are written by one process reading the tokenized work units in input
order, so the first copy of a duplicated document is the one kept.
"""

from __future__ import annotations

import hashlib
import math
import os

import numpy as np

SPLITS = ("train", "eval")

# A shard holds about SHARD_TEXT_BYTES of text, and a split gets at least 4
# shards (of no less than MIN_SHARD_TEXT_BYTES), so even a corpus of a few MB
# lets several training workers read disjoint shards; MAX_SHARDS bounds the
# files open for writing, and the memory of their buffers, on huge corpora.
SHARD_TEXT_BYTES = 4 << 20
MIN_SHARD_TEXT_BYTES = 256 << 10
MAX_SHARDS = 1024

# One record per document of a tokenized work unit: its digest, its number of
# ids and of UTF-8 bytes. The ids themselves follow in a file beside it.
INDEX_DTYPE = np.dtype([("digest", "V16"), ("tokens", "<u8"), ("bytes", "<u8")])


def duplicate_key(digest: bytes) -> int:
    """8 bytes of the digest as an int: the dedupe set keeps one of these per document."""
    return int.from_bytes(digest[:8], "little")


def split_of(digest: bytes, eval_fraction: float) -> str:
    return "eval" if int.from_bytes(digest[8:12], "little") < eval_fraction * (1 << 32) else "train"


def shard_count(text_bytes: int) -> int:
    """Shards for a split expected to hold `text_bytes` of text (see the constants above)."""
    wanted = max(math.ceil(text_bytes / SHARD_TEXT_BYTES), min(4, text_bytes // MIN_SHARD_TEXT_BYTES))
    return max(1, min(MAX_SHARDS, wanted))


class _Shard:
    """One shard file being written: buffered, hashed and counted as it grows."""

    _FLUSH_BYTES = 64 << 10  # small, since up to MAX_SHARDS of these fill at once

    def __init__(self, directory: str, split: str, index: int):
        self.file = f"{split}/shard-{index:05d}.bin"
        self._path = os.path.join(directory, self.file)
        self._buffer = bytearray()
        self._sha256 = hashlib.sha256()
        self.documents = self.tokens = self.bytes = 0
        open(self._path, "wb").close()

    def add(self, ids: bytes, tokens: int, text_bytes: int) -> None:
        self._buffer += ids
        self.documents += 1
        self.tokens += tokens
        self.bytes += text_bytes
        if len(self._buffer) >= self._FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        with open(self._path, "ab") as f:
            f.write(self._buffer)
        self._sha256.update(self._buffer)
        self._buffer.clear()

    def close(self) -> dict:
        self._flush()
        return {"file": self.file, "documents": self.documents, "tokens": self.tokens,
                "bytes": self.bytes, "sha256": self._sha256.hexdigest()}


def write_shards(units: list[str], directory: str, *, counts: dict[str, int], dtype: str, eos_id: int,
                 eval_fraction: float) -> tuple[dict, int]:
    """Shards of `directory/{train,eval}/` from tokenized units (paths without suffix), in order.

    Returns the splits' entries of spec.json and the number of duplicates
    dropped. Memory: the shard buffers, one document's ids, and the dedupe
    set of one 8-byte key per distinct document (about 70 bytes each as a
    Python int in a set: 70 MB per million documents).
    """
    itemsize = np.dtype(dtype).itemsize
    eos = np.array([eos_id], dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    shards = {}
    for split in SPLITS:
        os.makedirs(os.path.join(directory, split), exist_ok=True)
        shards[split] = [_Shard(directory, split, i) for i in range(counts[split])]
    seen, duplicates = set(), 0
    for unit in units:
        index = np.fromfile(unit + ".idx", dtype=INDEX_DTYPE)
        with open(unit + ".ids", "rb") as ids:
            for digest, tokens, text_bytes in index.tolist():
                data = ids.read(tokens * itemsize)
                key = duplicate_key(digest)
                if key in seen:
                    duplicates += 1
                    continue
                seen.add(key)
                split = shards[split_of(digest, eval_fraction)]
                shard = split[int.from_bytes(digest[12:16], "little") % len(split)]
                shard.add(data + eos, tokens + 1, text_bytes)
    splits = {}
    for split, files in shards.items():
        entries = [shard.close() for shard in files]
        splits[split] = {key: sum(e[key] for e in entries) for key in ("documents", "tokens", "bytes")}
        splits[split]["shards"] = entries
    return splits, duplicates
