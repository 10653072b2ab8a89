"""Fuzz a real embedded server with malformed REST and gRPC requests.

Trains and exports the shipped digits CNN for a few steps (float input;
Predict, Classify and Regress signatures) and saves a hand-made SavedModel
`mixed` (a float and a string input in `serving_default`, an int32 input in
`ints`), starts `tfbig serve --engine=embedded` on both in a subprocess with
gRPC and REST, and sends `--requests` generated requests from `--threads`
threads, about two thirds REST and one third gRPC, built by
`scripts/malformed.py` from the signatures the server reports: wrong dtypes,
negative, zero, huge and many dims, DT_VARIANT / DT_RESOURCE / unknown dtype
enums, tensor_content of the wrong length, too few or too many values, random
and truncated bytes as the serialized proto, unknown models, versions,
labels, signatures and output filters, deep JSON nesting, huge numbers, NaN
tokens, b64 objects, ragged instances, wrong keys, non-JSON and non-UTF-8
bodies, wrong HTTP methods, paths, headers and request lines, malformed
classify/regress examples; `--valid-fraction` of them valid (their answers
must be OK and hold the signature's outputs).

The server runs with an address-space limit (`--memory-headroom-gb` above
its size after warm-up, set with prlimit), so that a request which makes it
allocate without bound fails (an INTERNAL answer, or the process dies and is
counted as a crash) instead of taking the machine down. Requests whose
declared tensors exceed 64 MB ("heavy") go one at a time, at most
`--max-huge` of them.

    python scripts/fuzz_serve.py [--requests 10000] [--threads 8] [--seed 0]
                                 [--valid-fraction 0.1] [--max-huge 20]

Prints one JSON object: requests sent per protocol; answers by gRPC code and
HTTP status; `server_errors` (gRPC INTERNAL / UNKNOWN / DATA_LOSS and HTTP
5xx) with counts by generator kind, up to 10 examples (one per kind, distinct
messages) and the 30 most frequent distinct messages with their counts;
`no_answer` (a dropped connection or a timeout); `crashes` (the server
process exited: checked every 20 ms and after every batch of 500; with the kinds of
the requests in flight then and the log's tail); valid requests sent and
failed; `memory` (RSS after warm-up, peak RSS sampled every 20 ms and VmHWM,
their growth in MB); threads and open file descriptors before and after;
`final_check` (after the fuzzing, a fixed digits image and a mixed-model
request on both protocols must give the answers they gave before it, and
the mixed model's must equal numpy's). Exits 1 when a target is missed: 0
crashes, 0 server errors, 0 unanswered requests, 0 failed valid requests, RSS
growth below `--rss-target-mb` (200), and a passing final check.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import os
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import tfbig  # noqa: F401  (Keras 2 before TensorFlow loads)

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2
from tensorflow_serving.config import model_server_config_pb2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import malformed  # noqa: E402

from tfbig.distribute.cluster import free_ports  # noqa: E402
from tfbig.serving.config_files import write_text_proto  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(tfbig.__file__), "configs")
SERVER_FAULTS = {"INTERNAL", "UNKNOWN", "DATA_LOSS"}
# The features the digits model's classify/regress signatures parse (tfbig.export.signatures).
DIGITS_FEATURES = {"inputs": ("float", 64)}
MAX_EXAMPLES = 10
MAX_MESSAGES = 30  # the most frequent distinct server-error messages (digits as #) with their counts


# --- models ---------------------------------------------------------------------------------------

class MixedInputs(tf.Module):
    """A SavedModel not made by tfbig: a float and a string input, and an int32 one."""

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x"),
                                  tf.TensorSpec([None], tf.string, name="tag")])
    def serve(self, x, tag):
        return {"total": tf.reduce_sum(x, axis=1), "tag_bytes": tf.strings.join([tag, tf.constant(b"\xff")])}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="tokens")])
    def ints(self, tokens):
        return {"sum": tf.reduce_sum(tokens, axis=1), "length": tf.shape(tokens)[1:] + 0 * tokens[:, 0]}


def save_mixed(base: str, version: int = 1) -> str:
    module = MixedInputs()
    path = os.path.join(base, str(version))
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve, "ints": module.ints})
    return path


def export_digits(workdir: str, steps: int) -> str:
    """The shipped digits CNN config trained for `steps` steps; returns the model base path."""
    from tfbig.config import load_config
    from tfbig.export import export_run
    from tfbig.train import train

    run_dir = os.path.join(workdir, "digits_run")
    overrides = [f"train.steps={steps}", f"train.steps_per_execution={steps}", f"train.log_every={steps}",
                 f"train.checkpoint_every={steps}", "train.eval_every=0", "train.progress_bar=false",
                 "distribute.strategy=one_device", f"output.dir={run_dir}"]
    with contextlib.redirect_stdout(sys.stderr):  # stdout is for the JSON only
        train(load_config(os.path.join(CONFIGS, "digits_cnn.yaml"), overrides))
        return os.path.dirname(export_run(run_dir, os.path.join(workdir, "models", "digits")).path)


def prepare_models(workdir: str, steps: int) -> dict[str, str]:
    """{model name: base path}: the digits CNN and the mixed-input module, version 1 each."""
    mixed = os.path.join(workdir, "models", "mixed")
    with contextlib.redirect_stdout(sys.stderr):
        save_mixed(mixed)
    return {"digits": export_digits(workdir, steps), "mixed": mixed}


def write_model_config(path: str, bases: dict[str, str], labels: dict | None = None,
                       versions: dict | None = None) -> str:
    """A models.config; `versions` {model: [v, ...]} pins a specific policy, `labels` {model: {label: v}}."""
    config = model_server_config_pb2.ModelServerConfig()
    for name, base in bases.items():
        entry = config.model_config_list.config.add(name=name, base_path=base, model_platform="tensorflow")
        if versions and name in versions:
            entry.model_version_policy.specific.versions.extend(sorted(versions[name]))
        for label, version in sorted(((labels or {}).get(name) or {}).items()):
            entry.version_labels[label] = version
    return write_text_proto(config, path)


# --- the server -----------------------------------------------------------------------------------

def proc_stats(pid: int) -> dict:
    """RSS, peak RSS (VmHWM), address space (MB), threads and open fds of a live process
    (OSError when it has exited)."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()[0] if value.split() else ""
    if "VmRSS" not in fields:  # a zombie: exited, not yet reaped
        raise ProcessLookupError(f"process {pid} has exited")
    return {"rss_mb": int(fields["VmRSS"]) / 1024, "hwm_mb": int(fields["VmHWM"]) / 1024,
            "vmsize_mb": int(fields["VmSize"]) / 1024, "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


class Server:
    """`tfbig serve --engine=embedded` in a child process on free localhost ports."""

    def __init__(self, flags: list[str], log_path: str):
        self.grpc_port, self.rest_port = free_ports(2)
        self.log_path = log_path
        command = [sys.executable, "-m", "tfbig.cli", "serve", "--engine=embedded", "--host=127.0.0.1",
                   f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}", *flags]
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.process.pid
        self.address_space_limit_mb = None

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_available(self, models: list[str], timeout_s: float = 300.0) -> None:
        from tfbig.serving.client import Client
        from tfbig.serving.errors import ServingError

        deadline = time.monotonic() + timeout_s
        with Client(self.grpc_target, timeout=5.0, max_retries=0) as client:
            for model in models:
                while True:
                    if not self.alive():
                        raise RuntimeError(f"the server exited with status {self.process.returncode}: "
                                           f"{self.log_tail()}")
                    try:
                        if any(s["state"] == "AVAILABLE" for s in client.status(model)):
                            break
                    except ServingError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"model {model} not AVAILABLE after {timeout_s:g} s: {self.log_tail()}")
                    time.sleep(0.25)

    def limit_memory(self, headroom_gb: float) -> None:
        """Cap the address space at its size now plus the headroom: a runaway allocation then
        fails (or kills only the server) before it can exhaust the machine."""
        limit = int((proc_stats(self.pid)["vmsize_mb"] + headroom_gb * 1024) * 2**20)
        resource.prlimit(self.pid, resource.RLIMIT_AS, (limit, limit))
        self.address_space_limit_mb = round(limit / 2**20)

    def log_tail(self, lines: int = 8) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return " | ".join(line.strip() for line in f.readlines()[-lines:] if line.strip())
        except OSError:
            return "(no log)"

    def stop(self) -> int | None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


class Watcher(threading.Thread):
    """Samples the server's RSS, threads and fds; notices its death at once (`died` is set)."""

    def __init__(self, server: Server, interval_s: float = 0.02, sample_every_s: float = 0.0):
        super().__init__(daemon=True, name="watcher")
        self.server, self.interval_s = server, interval_s
        self.sample_every_s = sample_every_s  # also keep (t, stats) every this often (0: never)
        self.died = threading.Event()
        self.done = threading.Event()
        self.peak_rss_mb = 0.0
        self.samples: list[tuple[float, dict]] = []
        self.start_time = time.monotonic()
        self.lock = threading.Lock()

    def reset_peak(self) -> None:
        with self.lock:
            self.peak_rss_mb = 0.0

    def run(self) -> None:
        last_sample = -1e9
        while not self.done.is_set():
            if not self.server.alive():
                self.died.set()
                return
            try:
                stats = proc_stats(self.server.pid)
            except (OSError, KeyError, ValueError):
                continue  # exiting right now: the next poll sees it
            with self.lock:
                self.peak_rss_mb = max(self.peak_rss_mb, stats["rss_mb"])
            now = time.monotonic()
            if self.sample_every_s and now - last_sample >= self.sample_every_s:
                self.samples.append((now - self.start_time, stats))
                last_sample = now
            self.done.wait(self.interval_s)

    def stop(self) -> None:
        self.done.set()
        self.join()


# --- sending --------------------------------------------------------------------------------------

class Answer(collections.namedtuple("Answer", "code message body seconds", defaults=(0.0,))):
    """`code`: a gRPC status name, an HTTP status as text, or "no_answer"; `body` the reply bytes;
    `seconds` from sending to the whole reply read."""


class Sender:
    """Sends Cases; one per thread (its own HTTP connection), sharing one gRPC channel."""

    def __init__(self, channel: grpc.Channel, rest_port: int, timeout_s: float):
        self.channel, self.rest_port, self.timeout_s = channel, rest_port, timeout_s
        self.http: http.client.HTTPConnection | None = None

    def send(self, case: malformed.Case) -> Answer:
        began = time.perf_counter()
        if case.protocol == "grpc":
            answer = self._grpc(case)
        elif case.raw_http is not None:
            answer = self._raw(case.raw_http)
        else:
            answer = self._rest(case)
        return answer._replace(seconds=time.perf_counter() - began)

    def _grpc(self, case) -> Answer:
        call = self.channel.unary_unary(case.rpc)  # no serializers: bytes in, bytes out
        try:
            return Answer("OK", "", call(case.payload, timeout=self.timeout_s))
        except grpc.RpcError as error:
            code = error.code()
            if code == grpc.StatusCode.UNAVAILABLE and "connect" in (error.details() or "").lower():
                return Answer("no_answer", f"UNAVAILABLE: {error.details()}", b"")
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return Answer("no_answer", f"no answer in {self.timeout_s:g} s", b"")
            return Answer(code.name, error.details() or "", b"")

    def _rest(self, case) -> Answer:
        for attempt in range(2):  # a kept-alive connection the server closed is retried once
            if self.http is None:
                self.http = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=self.timeout_s)
            fresh = attempt == 1
            try:
                self.http.request(case.http_method, case.path, body=case.body or None,
                                  headers={"Content-Type": "application/json", **case.headers})
                response = self.http.getresponse()
                body = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self._close()
                return Answer(str(response.status), _error_text(body), body)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as error:
                self._close()
                if fresh:
                    return Answer("no_answer", f"{type(error).__name__}: {error}", b"")
            except (OSError, http.client.HTTPException) as error:
                self._close()
                return Answer("no_answer", f"{type(error).__name__}: {error}", b"")
        raise AssertionError("unreachable")

    def _raw(self, data: bytes) -> Answer:
        """A request http.client cannot write; a server may close such a connection unanswered."""
        try:
            with socket.create_connection(("127.0.0.1", self.rest_port), timeout=self.timeout_s) as sock:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
                reply = b""
                while chunk := sock.recv(65536):
                    reply += chunk
        except ConnectionResetError:
            return Answer("closed", "", b"")
        except OSError as error:
            return Answer("no_answer", f"{type(error).__name__}: {error}", b"")
        match = re.match(rb"HTTP/1\.[01] (\d{3})", reply)
        if not match:
            return Answer("closed", "", b"")
        return Answer(match.group(1).decode(), _error_text(reply.partition(b"\r\n\r\n")[2]), reply)

    def _close(self) -> None:
        if self.http is not None:
            self.http.close()
            self.http = None


def _error_text(body: bytes) -> str:
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and "error" in doc:
            return str(doc["error"])
    except ValueError:
        pass
    return body[:300].decode("utf-8", errors="replace")


def is_server_fault(code: str) -> bool:
    return code in SERVER_FAULTS or (code.isdigit() and int(code) >= 500)


def answer_is_valid(case: malformed.Case, answer: Answer) -> bool:
    """A valid request's answer: OK, and for Predict every output of the signature."""
    if answer.code not in ("OK", "200"):
        return False
    if case.signature is None:
        return True
    if case.protocol == "grpc":
        reply = predict_pb2.PredictResponse.FromString(answer.body)
        return set(reply.outputs) == set(case.signature.outputs)
    doc = json.loads(answer.body)
    return bool(doc.get("predictions") if "instances" in json.loads(case.body) else "outputs" in doc)


class Tally:
    """Thread-safe counts of what came back."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = collections.Counter()
        self.answers = {"rest": collections.Counter(), "grpc": collections.Counter()}
        self.faults_by_kind = collections.Counter()
        self.fault_examples: dict[str, dict] = {}
        self.fault_messages = collections.Counter()
        self.no_answer: list[dict] = []
        self.no_answer_count = 0
        self.valid_sent = 0
        self.valid_seconds: list[float] = []  # of the valid requests answered as they should be
        self.valid_failed: list[dict] = []
        self.valid_failed_count = 0
        self.heavy_sent = 0

    def add(self, case: malformed.Case, answer: Answer) -> None:
        with self.lock:
            self.sent[case.protocol] += 1
            self.answers[case.protocol][answer.code] += 1
            self.heavy_sent += case.heavy
            example = {"kind": case.kind, "protocol": case.protocol, "code": answer.code,
                       "message": answer.message[:300]}
            if is_server_fault(answer.code):
                self.faults_by_kind[case.kind] += 1
                key = re.sub(r"\d+", "#", answer.message)[:160]  # "size 8" and "size 9" are one message
                self.fault_messages[key] += 1
                kinds = {e["kind"] for e in self.fault_examples.values()}
                if key not in self.fault_examples and case.kind not in kinds and len(kinds) < MAX_EXAMPLES:
                    self.fault_examples[key] = example  # one per kind, each message different
            if answer.code == "no_answer":
                self.no_answer_count += 1
                if len(self.no_answer) < MAX_EXAMPLES:
                    self.no_answer.append(example)
            if case.valid:
                self.valid_sent += 1
                if answer_is_valid(case, answer):
                    self.valid_seconds.append(answer.seconds)
                else:
                    self.valid_failed_count += 1
                    if len(self.valid_failed) < MAX_EXAMPLES:
                        self.valid_failed.append(example)

    def report(self) -> dict:
        return {
            "requests": {**dict(self.sent), "total": sum(self.sent.values()), "heavy": self.heavy_sent},
            "answers": {p: dict(sorted(c.items())) for p, c in self.answers.items()},
            "server_errors": {"count": sum(self.faults_by_kind.values()),
                              "by_kind": dict(self.faults_by_kind.most_common()),
                              "examples": list(self.fault_examples.values()),
                              "messages": dict(self.fault_messages.most_common(MAX_MESSAGES))},
            "no_answer": {"count": self.no_answer_count, "examples": self.no_answer},
            "valid": {"sent": self.valid_sent, "failed": self.valid_failed_count, "examples": self.valid_failed,
                      "latency_ms": latency_ms(self.valid_seconds)},
        }


def latency_ms(seconds: list[float]) -> dict:
    """Percentiles of request latencies, in ms (nearest rank): the tail shows a stall that
    stops every request at once (an allocation, a collection, a load) where the median hides it."""
    if not seconds:
        return {}
    ordered = sorted(seconds)

    def at(fraction: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 2)

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "p99.9": at(0.999), "max": at(1.0)}


def run_cases(cases, server: Server, watcher: Watcher, record, *, threads: int, timeout_s: float,
              batch: int = 500, stop_at: float | None = None) -> dict | None:
    """Send `cases` (an iterator) from `threads` threads until it ends, `stop_at` (monotonic) passes
    or the server dies; `record(case, answer)` counts each answer. Returns the crash record, or
    None. Heavy cases go one at a time."""
    cases = iter(cases)
    lock, heavy = threading.Lock(), threading.Semaphore(1)
    in_flight: dict[int, str] = {}
    crash: dict = {}
    sent = [0]

    with grpc.insecure_channel(server.grpc_target, options=[("grpc.max_send_message_length", -1),
                                                            ("grpc.max_receive_message_length", -1)]) as channel:
        def worker(index: int) -> None:
            sender = Sender(channel, server.rest_port, timeout_s)
            try:
                while not watcher.died.is_set() and (stop_at is None or time.monotonic() < stop_at):
                    with lock:
                        case = next(cases, None)
                        sent[0] += 1
                        check = sent[0] % batch == 0
                    if case is None:
                        return
                    if check and not server.alive():  # the batch's check (the watcher polls too)
                        watcher.died.set()
                        return
                    in_flight[index] = case.kind
                    with heavy if case.heavy else contextlib.nullcontext():
                        answer = sender.send(case)
                    in_flight.pop(index, None)
                    if watcher.died.is_set() and answer.code == "no_answer":
                        crash.setdefault("in_flight", set()).add(case.kind)
                        return  # not counted: the server had gone
                    record(case, answer)
            finally:
                sender._close()

        workers = [threading.Thread(target=worker, args=(i,), name=f"sender-{i}") for i in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
    if watcher.died.is_set() or not server.alive():
        server.process.wait()
        kinds = crash.get("in_flight", set()) | set(in_flight.values())
        return {"exit_status": server.process.returncode, "in_flight_kinds": sorted(kinds),
                "log_tail": server.log_tail()}
    return None


# --- checks -----------------------------------------------------------------------------------------

def fetch_signatures(server: Server, models: list[str]) -> list[malformed.Signature]:
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    signatures = []
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for model in models:
            request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            request.model_spec.name = model
            reply = stub.GetModelMetadata(request, timeout=30)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            reply.metadata["signature_def"].Unpack(signature_map)
            signatures += malformed.signatures_of(model, signature_map)
    return signatures


def reference_requests() -> list[tuple[str, str, dict, callable]]:
    """(model, signature, inputs, expected outputs or None) checked before and after the fuzzing."""
    from sklearn.datasets import load_digits

    image = (load_digits().images[:2] / 16.0).astype(np.float32)
    x = np.array([[1.5, 2.25], [-1.0, 0.5]], np.float32)
    tag = np.array([b"a", b"bc"], dtype=object)
    tokens = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    return [("digits", "serving_default", {"inputs": image}, None),
            ("mixed", "serving_default", {"x": x, "tag": tag},
             {"total": x.sum(axis=1), "tag_bytes": np.array([b"a\xff", b"bc\xff"], dtype=object)}),
            ("mixed", "ints", {"tokens": tokens}, {"sum": tokens.sum(axis=1), "length": np.array([3, 3], np.int32)})]


def answers_of(server: Server) -> dict:
    """Each reference request's outputs over gRPC and REST (a failure is recorded as its message)."""
    from tfbig.serving.client import Client
    from tfbig.serving.errors import ServingError

    results = {}
    for protocol, target in (("grpc", server.grpc_target), ("rest", f"127.0.0.1:{server.rest_port}")):
        with Client(target, protocol, timeout=60.0, max_retries=0) as client:
            for model, signature, inputs, _ in reference_requests():
                try:
                    results[f"{protocol}/{model}/{signature}"] = client.predict(model, inputs, signature=signature)
                except ServingError as error:
                    results[f"{protocol}/{model}/{signature}"] = f"{error.code.name}: {error.message}"
    return results


def compare_answers(before: dict, after: dict) -> dict:
    """{"ok": ..., "problems": [...]}: after == before (to float32 rounding), and == numpy where known."""
    problems = []
    expected = {f"{p}/{m}/{s}": e for p in ("grpc", "rest") for m, s, _, e in reference_requests()}
    for key, answer in after.items():
        if isinstance(answer, str):
            problems.append(f"{key}: {answer}")
            continue
        references = [("before", before.get(key))] + ([("numpy", expected[key])] if expected.get(key) else [])
        for name, reference in references:
            if not isinstance(reference, dict) or set(reference) != set(answer):
                got = reference if isinstance(reference, str) else sorted(reference or {})
                problems.append(f"{key}: outputs {sorted(answer)} vs {name} {got}")
                continue
            for output, value in answer.items():
                value, ref = np.asarray(value), np.asarray(reference[output])
                same = (value.shape == ref.shape and (np.array_equal(value, ref) if value.dtype.kind in "OSUiub"
                                                      else np.allclose(value, ref, rtol=1e-6, atol=1e-6)))
                if not same:
                    problems.append(f"{key}/{output}: {value.tolist()!r:.80} != {name} {ref.tolist()!r:.80}")
    return {"ok": not problems, "compared": sorted(after), "problems": problems}


def warm_up(server: Server, signatures, threads: int, requests: int, timeout_s: float) -> None:
    """Valid requests on both protocols from every thread, so that the pools reach their size."""
    rng = random.Random(12345)
    generator = malformed.Generator(signatures, rng, example_features=DIGITS_FEATURES)
    cases = [generator.valid("rest" if i % 2 else "grpc") for i in range(requests)]
    watcher = Watcher(server)
    watcher.start()
    tally = Tally()
    crash = run_cases(cases, server, watcher, tally.add, threads=threads, timeout_s=timeout_s)
    watcher.stop()
    if crash:
        raise RuntimeError(f"the server exited during the valid warm-up requests: {crash}")
    if tally.valid_failed_count:
        raise RuntimeError(f"valid warm-up requests failed: {tally.valid_failed}")


def generate_cases(signatures, args) -> list[malformed.Case]:
    """All the cases, made up front from one seed (the same requests every run with that seed)."""
    generator = malformed.Generator(signatures, random.Random(args.seed), example_features=DIGITS_FEATURES)
    cases, heavy = [], 0
    for _ in range(args.requests):
        protocol = "rest" if generator.rng.random() < args.rest_fraction else "grpc"
        case = generator.case(protocol, valid_fraction=args.valid_fraction, allow_heavy=heavy < args.max_huge)
        heavy += case.heavy
        cases.append(case)
    return cases


# --- main -----------------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="generated requests to send (default 10000)")
    parser.add_argument("--threads", type=int, default=8, help="sending threads (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rest-fraction", type=float, default=2 / 3, help="share of REST requests (default 2/3)")
    parser.add_argument("--valid-fraction", type=float, default=0.1, help="share of valid requests (default 0.1)")
    parser.add_argument("--max-huge", type=int, default=20,
                        help="at most this many requests declaring tensors over 64 MB (default 20; one in flight)")
    parser.add_argument("--memory-headroom-gb", type=float, default=4.0,
                        help="the server's address space may grow this much over its size after warm-up")
    parser.add_argument("--rss-target-mb", type=float, default=200.0, help="RSS growth target (default 200)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one answer")
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--warmup-requests", type=int, default=200)
    parser.add_argument("--workdir", help="keep the models and the server log here (default: a temporary dir)")
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="fuzz_serve-"))
        os.makedirs(workdir, exist_ok=True)
        bases = prepare_models(workdir, args.train_steps)
        config = write_model_config(os.path.join(workdir, "models.config"), bases)
        server = Server([f"--model_config_file={config}", "--file_system_poll_wait_seconds=0"],
                        os.path.join(workdir, "server.log"))
        stack.callback(server.stop)
        server.wait_available(sorted(bases))
        signatures = fetch_signatures(server, sorted(bases))
        warm_up(server, signatures, args.threads, args.warmup_requests, args.timeout)
        before_answers = answers_of(server)
        server.limit_memory(args.memory_headroom_gb)
        cases = generate_cases(signatures, args)
        time.sleep(1.0)
        before = proc_stats(server.pid)
        watcher = Watcher(server)
        watcher.start()
        tally = Tally()
        fuzz_start = time.monotonic()
        print(f"fuzz_serve: sending {len(cases)} requests to server pid {server.pid}", file=sys.stderr, flush=True)
        crash = run_cases(cases, server, watcher, tally.add, threads=args.threads, timeout_s=args.timeout)
        fuzz_seconds = time.monotonic() - fuzz_start
        watcher.stop()
        after = final = None
        if crash is None:
            time.sleep(2.0)  # let finished requests' threads and connections wind down
            after = proc_stats(server.pid)
            final = compare_answers(before_answers, answers_of(server))
            crash = None if server.alive() else {"exit_status": server.process.returncode, "in_flight_kinds": [],
                                                 "log_tail": server.log_tail()}
        peak = max(watcher.peak_rss_mb, after["hwm_mb"] if after and after["hwm_mb"] > before["hwm_mb"] else 0)
        report = {
            "benchmark": "fuzz_serve", "seed": args.seed, "threads": args.threads,
            "fuzz_seconds": round(fuzz_seconds, 1), "models": {s.model: [] for s in signatures},
            **tally.report(),
            "crashes": {"count": int(crash is not None), **({"detail": crash} if crash else {})},
            "memory": {"address_space_limit_mb": server.address_space_limit_mb,
                       "baseline_rss_mb": round(before["rss_mb"], 1), "peak_rss_mb": round(peak, 1),
                       "rss_growth_mb": round(peak - before["rss_mb"], 1),
                       "end_rss_mb": round(after["rss_mb"], 1) if after else None,
                       "vmhwm_before_mb": round(before["hwm_mb"], 1),
                       "vmhwm_after_mb": round(after["hwm_mb"], 1) if after else None},
            "threads_count": {"before": before["threads"], "after": after["threads"] if after else None},
            "open_fds": {"before": before["fds"], "after": after["fds"] if after else None},
            "final_check": final or {"ok": False, "problems": ["the server had exited"]},
        }
        for s in signatures:
            report["models"][s.model].append(f"{s.name} ({s.method})")
        missed = [name for name, ok in (
            ("crashes", crash is None), ("server_errors", report["server_errors"]["count"] == 0),
            ("no_answer", report["no_answer"]["count"] == 0), ("valid_failed", report["valid"]["failed"] == 0),
            ("rss_growth", report["memory"]["rss_growth_mb"] < args.rss_target_mb),
            ("final_check", report["final_check"]["ok"])) if not ok]
        report["targets"] = {"crashes": 0, "server_errors": 0, "no_answer": 0, "valid_failed": 0,
                             "rss_growth_mb_below": args.rss_target_mb, "final_check": "ok"}
        report["missed"] = missed
        report["passed"] = not missed
        report["seconds"] = round(time.monotonic() - start, 1)
    print(json.dumps(report, indent=1))
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
