"""The request log's writer: one thread appending records to rotating, bounded TFRecord files.

Request threads only append to a bounded queue (when it is full the record
is dropped and counted, so a slow disk never slows a request); serializing and
writing happen here. The queue is a deque the thread drains every
DRAIN_INTERVAL_S rather than a queue.Queue it waits on: waking the writer for
each record cost the server's core more than writing the record (a thread
switch per request at thousands of requests/s). For the same reason records
are framed here (TFRecord's length and masked CRC-32C, google-crc32c) and
written through a large buffer, not with tf.io.TFRecordWriter: its write()
releases the GIL for every record, and taking it back among dozens of busy
request threads cost the server 10 % of its requests/s at one record per
request. Each file prefix has one open file, named after its first
record's time and written as `.tmp` until it is closed and renamed
(tfbig.serving.request_log describes the files). A file is closed when the next
record would take it past `max_file_bytes` or when it is `max_file_seconds`
old, and the oldest closed files of this writer's prefixes (those of earlier
runs included) are deleted while all of them take more than `max_total_bytes`.

A write that fails (a full disk, an unwritable directory) loses the file it
was writing, is logged once until writing works again, and is counted; records
of that prefix are then dropped for RETRY_S before the next try, so a broken
disk costs one failed open per second, not one per request. Nothing here ever
raises into a request. `close()` writes what is queued and closes every file.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import struct
import threading
import time

import google_crc32c
from prometheus_client import CollectorRegistry, Counter, Gauge

from tfbig.serving.request_log import PARTIAL_SUFFIX, file_name, log_files

log = logging.getLogger("tfbig.serving")

# Records waiting for the writer, and the bytes of their requests; past either, records are
# dropped: a flood of large requests (up to --max_request_bytes each) must not pile up in memory
# behind a slow disk.
QUEUE_RECORDS = 4096
QUEUE_BYTES = 64 << 20
DRAIN_INTERVAL_S = 0.05
RETRY_S = 1.0
RECORD_OVERHEAD = 16  # a TFRecord frames each record with a length, its CRC and the data's CRC
WRITE_BUFFER_BYTES = 1 << 20  # one system call (one release of the GIL) per this many bytes


def _masked_crc(data: bytes) -> bytes:
    """TFRecord's checksum: CRC-32C, rotated right by 15 bits plus a constant (tf's crc32c::Mask)."""
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def tfrecord(data: bytes) -> bytes:
    """`data` framed as one TFRecord: length, the length's masked CRC, data, the data's masked CRC."""
    length = struct.pack("<Q", len(data))
    return length + _masked_crc(length) + data + _masked_crc(data)


@dataclasses.dataclass
class _OpenFile:
    final: str
    start: float  # its first record's time, seconds since the epoch
    writer: object  # the .tmp file, opened for binary writing
    opened: float  # time.monotonic()
    size: int = 0
    records: int = 0

    @property
    def partial(self) -> str:
        return self.final + PARTIAL_SUFFIX


class LogWriter:
    """`submit(prefix, time, make_record)` from any thread; `make_record()` returns the record's
    bytes and runs on the writer thread. Counts go to `registry` (the server's metrics page)."""

    def __init__(self, *, max_file_bytes: int, max_total_bytes: int, max_file_seconds: float,
                 registry: CollectorRegistry, queue_records: int = QUEUE_RECORDS, queue_bytes: int = QUEUE_BYTES,
                 drain_interval_s: float = DRAIN_INTERVAL_S):
        self._max_file_bytes = max_file_bytes
        self._max_total_bytes = max_total_bytes
        self._max_file_seconds = max_file_seconds
        self._pending: collections.deque = collections.deque()  # appends and pops are atomic
        self._capacity = queue_records
        self._drain_interval_s = drain_interval_s
        self._queue_bytes = queue_bytes
        self._pending_bytes = 0
        self._pending_lock = threading.Lock()  # for _pending_bytes: += is not atomic across threads
        self._closing = threading.Event()
        self._run = os.urandom(4).hex()
        self._seq = 0
        self._open: dict[str, _OpenFile] = {}
        self._closed: list[tuple[float, str, int]] = []  # (first record's time, path, bytes), oldest first
        self._disk_bytes = 0  # of the closed and the open files, kept as they change (not summed per record)
        self._known_prefixes: set[str] = set()
        self._retry_at: dict[str, float] = {}
        self._failing = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopped = False
        records = Counter(
            ":tfbig:serving:request_log_records",
            "Sampled requests by what became of their log record: written, queue_full, write_error, closed.",
            ["outcome"], registry=registry)
        # Children looked up once: a labels() lookup costs more than the increment.
        self._written, self._queue_full, self._write_error, self._after_close = (
            records.labels(outcome) for outcome in ("written", "queue_full", "write_error", "closed"))
        self._errors = Counter(":tfbig:serving:request_log_write_errors",
                               "Request log files that could not be opened, written or closed.", registry=registry)
        self._deleted = Counter(":tfbig:serving:request_log_deleted_files",
                                "Request log files deleted to keep the logs under their disk bound.",
                                registry=registry)
        self._bytes = Gauge(":tfbig:serving:request_log_bytes",
                            "Bytes of request log files on disk (this server's prefixes).", registry=registry)

    # --- request threads ---------------------------------------------------------

    def submit(self, prefix: str, when: float, make_record, size: int = 0) -> None:
        """`size`: the request's bytes as received, what the record will hold most of."""
        if self._stopped:  # a request that outlived the drain
            self._after_close.inc()
            return
        if self._thread is None:
            self._start()
        with self._pending_lock:
            if len(self._pending) >= self._capacity or self._pending_bytes + size > self._queue_bytes:
                self._queue_full.inc()
                return
            self._pending_bytes += size
            self._pending.append((prefix, when, make_record, size))

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._loop, name="request-log", daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Write everything queued, close and rename every open file; later records are dropped."""
        with self._start_lock:
            self._stopped = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._closing.set()
            thread.join()

    # --- the writer thread ---------------------------------------------------------

    def _loop(self) -> None:
        while True:
            closing = self._closing.wait(self._drain_interval_s)
            while self._pending:  # after close() nothing is appended: this empties it for good
                prefix, when, make_record, size = self._pending.popleft()
                self._step((prefix, when, make_record))
                with self._pending_lock:
                    self._pending_bytes -= size
            self._step(None)
            if closing:
                break
        for prefix in list(self._open):
            self._close(prefix)

    def _step(self, item) -> None:
        try:
            if item is not None:
                self._write(*item)
            else:
                self._close_old()
        except Exception:  # a bug must not stop the logging of later requests
            log.exception("the request log writer failed")
            self._errors.inc()

    def _write(self, prefix: str, when: float, make_record) -> None:
        if time.monotonic() < self._retry_at.get(prefix, 0.0):
            self._write_error.inc()
            return
        record = make_record()
        current = self._open.get(prefix)
        if current is not None and current.records and \
                current.size + len(record) + RECORD_OVERHEAD > self._max_file_bytes:
            self._close(prefix)
            current = None
        try:
            if current is None:
                current = self._open_file(prefix, when)
            current.writer.write(tfrecord(record))
        except OSError as error:  # ENOSPC, EFBIG, EACCES, ENOTDIR ...
            self._fail(prefix, error, lost=1 + (current.records if current else 0))
            return
        current.size += len(record) + RECORD_OVERHEAD
        current.records += 1
        self._disk_bytes += len(record) + RECORD_OVERHEAD
        if self._disk_bytes > self._max_total_bytes:
            self._bound_disk()

    def _open_file(self, prefix: str, when: float) -> _OpenFile:
        directory = os.path.dirname(prefix)
        os.makedirs(directory, exist_ok=True)
        if prefix not in self._known_prefixes:  # files of earlier runs count against the bound
            earlier = [(old.start, old.path, _size(old.path))
                       for old in log_files(directory, os.path.basename(prefix))]
            self._closed = sorted(self._closed + earlier)
            self._disk_bytes += sum(size for _, _, size in earlier)
            self._known_prefixes.add(prefix)
        self._seq += 1
        final = file_name(prefix, when, self._run, self._seq)
        opened = _OpenFile(final, when, open(final + PARTIAL_SUFFIX, "wb", buffering=WRITE_BUFFER_BYTES),
                           time.monotonic())
        self._open[prefix] = opened
        return opened

    def _close(self, prefix: str) -> None:
        current = self._open.pop(prefix)
        try:
            current.writer.close()
            os.replace(current.partial, current.final)
        except OSError as error:
            self._fail(prefix, error, lost=current.records, current=current)
            return
        self._written.inc(current.records)
        self._closed.append((current.start, current.final, current.size))
        self._closed.sort()
        if self._failing:
            self._failing = False
            log.info("the request log is written again (%s)", current.final)
        self._bound_disk()

    def _close_old(self) -> None:
        now = time.monotonic()
        for prefix in [p for p, f in self._open.items() if now - f.opened >= self._max_file_seconds]:
            self._close(prefix)

    def _fail(self, prefix: str, error: OSError, *, lost: int, current: _OpenFile | None = None) -> None:
        """Give up the prefix's file (it may end in half a record), count, and pause the prefix."""
        current = current or self._open.pop(prefix, None)
        if current is not None:
            self._disk_bytes -= current.size
            for cleanup in (current.writer.close, lambda: os.remove(current.partial)):
                try:
                    cleanup()
                except OSError:
                    pass
        self._errors.inc()
        self._write_error.inc(lost)
        self._retry_at[prefix] = time.monotonic() + RETRY_S
        if not self._failing:
            self._failing = True
            log.error("cannot write the request log %s*: %s; requests are served but not logged until "
                      "it can be written (counted in :tfbig:serving:request_log_records"
                      "{outcome=\"write_error\"})", prefix, error)

    def _bound_disk(self) -> None:
        while self._disk_bytes > self._max_total_bytes and self._closed:
            _, path, size = self._closed.pop(0)
            self._disk_bytes -= size
            try:
                os.remove(path)
            except FileNotFoundError:  # deleted by someone else: it no longer takes space either
                continue
            except OSError as error:
                log.warning("cannot delete the old request log %s: %s", path, error.strerror)
                continue
            self._deleted.inc()
        self._bytes.set(self._disk_bytes)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
