"""A corpus on disk: which files it is made of, and the documents inside them.

A source is a file, a glob or a directory; `stdlib:PATH` names PATH under the
standard library of the running Python (`stdlib:` all of it but its
site-packages), a real corpus of code and docstrings on every machine that a
config can name without a machine path. One `.txt`, `.md` or `.py` file is one document; one line of a `.jsonl` file
is one document (its `text` field, or another named one); a `.gz` suffix on
any of them means gzip. Files are read as bytes and decoded as strict UTF-8,
so the documents are exactly the text on disk (no newline translation).

A file that cannot be read, holds a NUL byte (binary), is not UTF-8, or is a
`.jsonl` with a line that is not a JSON object with a string text field, is a
`BadFile`: the caller skips and counts it rather than failing hours into a
large corpus. No TensorFlow here: this runs in worker processes.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import os
import sysconfig
import zlib
from typing import BinaryIO, Iterator

from tfbig.data.errors import DataError

SUFFIXES = (".txt", ".md", ".py", ".jsonl")
STDLIB = "stdlib:"
# Third-party packages installed inside the standard library's directory.
NOT_STDLIB = ("site-packages", "dist-packages")


class BadFile(Exception):
    """A file that cannot be a source of documents; the message is the reason."""


def is_source(path: str) -> bool:
    return path.removesuffix(".gz").endswith(SUFFIXES)


def is_jsonl(path: str) -> bool:
    return path.removesuffix(".gz").endswith(".jsonl")


def discover(paths: list[str]) -> list[str]:
    """Files named, matched by globs, or found under directories: sorted, each once.

    Directories are walked recursively, skipping hidden entries (`.git`,
    `.venv`) and files of other types; a file named on its own must have a
    supported suffix, and a path that names nothing is an error.
    """
    found = set()
    for source in paths:
        path = resolve_source(source)
        if glob.has_magic(path):
            matches = glob.glob(path, recursive=True)
            if not matches:
                raise DataError(f"{path!r} matches no file")
            found.update(m for m in matches if os.path.isfile(m) and is_source(m))
        elif os.path.isdir(path):
            found.update(_walk(path, skip=NOT_STDLIB if source.startswith(STDLIB) else ()))
        elif os.path.isfile(path):
            if not is_source(path):
                raise DataError(f"{path!r} is not a {', '.join(SUFFIXES)} file (or one of them .gz)")
            found.add(path)
        else:
            raise DataError(f"{source!r} does not exist" if path == source
                            else f"{source!r} ({path}) does not exist")
    return sorted(os.path.normpath(path) for path in found)


def resolve_source(source: str) -> str:
    """`source` with a `stdlib:` prefix replaced by the standard library's directory."""
    if not source.startswith(STDLIB):
        return source
    return os.path.join(sysconfig.get_paths()["stdlib"], source[len(STDLIB):].lstrip("/"))


def _walk(directory: str, skip=()) -> Iterator[str]:
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in skip]
        yield from (os.path.join(root, f) for f in files if not f.startswith(".") and is_source(f))


class _Digesting(io.RawIOBase):
    """A raw file that feeds every byte read through it to a hashlib object."""

    def __init__(self, raw: BinaryIO, digest):
        self._raw, self._digest = raw, digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self._raw.readinto(buffer)
        self._digest.update(memoryview(buffer)[:count])
        return count


def read_documents(path: str, *, text_field: str = "text", start: int = 0, end: int | None = None,
                   digest=None) -> Iterator[str]:
    """The non-empty documents of `path`, in file order; raises BadFile part way if it is bad.

    `start`/`end` restrict a plain `.jsonl` to the lines that begin in that
    byte range, so one large file can be read in parallel parts. `digest`
    (a hashlib object) is fed every byte of the file, read to its end.
    """
    try:
        with open(path, "rb") as raw:
            if digest is not None:
                raw = io.BufferedReader(_Digesting(raw, digest), 1 << 20)
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(".gz") else raw
            if is_jsonl(path):
                yield from _json_lines(stream, text_field, start, end)
            else:
                text = _decode(stream.read(), "")
                if text:
                    yield text
            while digest is not None and raw.read(1 << 20):  # the rest of the file, for its hash
                pass
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise BadFile(f"unreadable: {getattr(e, 'strerror', None) or e}") from None


def _json_lines(stream: BinaryIO, text_field: str, start: int, end: int | None) -> Iterator[str]:
    position = start
    if start:
        stream.seek(start - 1)
        position = start - 1 + len(stream.readline())  # the line under way belongs to the part before
    number = 0
    for number, line in enumerate(stream, 1):
        if end is not None and position >= end:
            return
        position += len(line)
        if not line.strip():
            continue
        where = f"line {number}" if not start else f"the line at byte {position - len(line)}"
        try:
            value = json.loads(_decode(line, f"{where}: "))
        except ValueError:
            raise BadFile(f"{where} is not JSON") from None
        text = value.get(text_field) if isinstance(value, dict) else None
        if not isinstance(text, str):
            raise BadFile(f"{where} has no string field {text_field!r}")
        if text:
            yield text


def _decode(data: bytes, where: str) -> str:
    if b"\0" in data:
        raise BadFile(f"{where}binary (holds NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadFile(f"{where}not UTF-8 (byte {e.start}: {data[e.start:e.start + 1]!r})") from None


def document_digest(text: str) -> bytes:
    """16 bytes naming a document by its content: duplicates, the split and the shard derive from it."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
