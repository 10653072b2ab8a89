"""Serving latency and throughput: in-process call vs the embedded server over gRPC and REST.

Trains and exports the shipped digits CNN and GPT configs for a few steps,
starts `tfbig serve --engine embedded` twice in subprocesses (without and with
server-side batching) and drives them from this process with the bundled
AsyncClient at several concurrencies (coroutines on one thread). The
in-process baselines call the same SavedModel's serving_default from as many
threads: numpy in and numpy out (`in_process`, what a Python caller does) and
the server's own direct call on a ready tensor (`in_process_tensor`, the floor).

The servers and the in-process baselines run on one half of the CPUs, the
load generator on the other, so that the client's own work is not charged to
the server (in a deployment clients run elsewhere); on one CPU all share it.
Every server, protocol and model first gets `--warmup-requests` untimed
requests at the highest concurrency. The machine's speed drifts, so every
point is measured in each of `--rounds` rounds, the configurations
alternating within a round, and reported as the median over rounds; a
batching speedup is the median of the per-round ratios (listed in
`batching_speedup_per_round`).
Per point: p50/p99 latency (ms) and requests/s. One request = one CNN image
(batch 1) or one GPT window of 64 tokens. A server point sends `--requests`
requests and goes on until it has lasted `--min-seconds`: a batching server
answers 1000 requests in a quarter of a second, a window in which its
requests/s varies by more than the margins this benchmark reports.

    python scripts/bench_serve.py [--requests 1000] [--min-seconds 2] [--concurrency 1,8,32]
                                  [--rounds 5] [--warmup-requests 500]

Prints one JSON object; `summary` holds grpc_overhead_p50_ms and
rest_overhead_p50_ms (CNN, concurrency 1, p50 over the numpy in-process call; the
`_vs_tensor_call` ones over the bare call) and
batching_speedup_c32 (CNN gRPC requests/s with batching over without, at 32).
With `--request-log` a third server logs every request (sampling 1.0) and
`request_log_throughput_ratio_c32` is its requests/s over the same server
without logging (median of the per-round ratios; 0.95 = 5 % fewer).

    python scripts/bench_serve.py --request-log --concurrency 32
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time

import tfbig  # noqa: F401  (Keras 2 before TensorFlow loads)

import numpy as np
import tensorflow as tf

from tfbig.config import load_config
from tfbig.export import export_run
from sklearn.datasets import load_digits
from tensorflow_serving.config import model_server_config_pb2

from tfbig.serving.config_files import write_text_proto
from tfbig.serving.load import summarize, measure_latency
from tfbig.serving.process import ServerProcess
from tfbig.serving.server.servable import direct_call
from tfbig.train import train


CONFIGS = os.path.join(os.path.dirname(tfbig.__file__), "configs")
BATCHING = ["--enable_batching", "--max_batch_size=32", "--batch_timeout_micros=2000",
            "--num_batch_threads=1", "--max_enqueued_batches=1000"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="timed requests per point")
    parser.add_argument("--min-seconds", type=float, default=2.0,
                        help="each server point goes on sending requests until it has lasted this long")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--rounds", type=int, default=5,
                        help="measurements of every point (median; five outvote two rounds in a slow spell)")
    parser.add_argument("--warmup-requests", type=int, default=500,
                        help="untimed requests per server, protocol and model before the rounds")
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--request-log", action="store_true",
                        help="also serve with every request logged (--request_log_sampling_rate=1) and "
                             "report its requests/s over the server without logging")
    return parser.parse_args()


def split_cpus() -> tuple[set[int], set[int]]:
    """(server CPUs, load generator CPUs): two halves of the CPUs this process may use."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return set(cpus), set(cpus)
    return set(cpus[len(cpus) // 2:]), set(cpus[:len(cpus) // 2])


def pin_process(cpus: set[int]) -> None:
    """Every thread of this process onto `cpus` (sched_setaffinity(0) moves only the caller)."""
    for thread_id in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that has just ended
            os.sched_setaffinity(int(thread_id), cpus)


def export_config(name: str, workdir: str, steps: int) -> str:
    run_dir = os.path.join(workdir, name)
    overrides = [f"train.steps={steps}", f"train.steps_per_execution={steps}", f"train.log_every={steps}",
                 f"train.checkpoint_every={steps}", "train.eval_every=0", "train.progress_bar=false",
                 "distribute.strategy=one_device", f"output.dir={run_dir}"]
    with contextlib.redirect_stdout(sys.stderr):  # stdout is for the JSON only
        train(load_config(os.path.join(CONFIGS, f"{name}.yaml"), overrides))
    return os.path.dirname(export_run(run_dir, os.path.join(workdir, "models", name)).path)


def write_model_config(bases: dict[str, str], path: str) -> str:
    config = model_server_config_pb2.ModelServerConfig()
    for name, base in bases.items():
        config.model_config_list.config.add(name=name, base_path=base, model_platform="tensorflow")
    return write_text_proto(config, path)


def drive(call, concurrency: int, requests: int) -> dict:
    """In-process baseline: `requests` calls from `concurrency` threads after a warmup."""
    for _ in range(3):
        call()
    latencies, lock = [], threading.Lock()
    per_thread = max(1, requests // concurrency)

    def worker():
        mine = []
        for _ in range(per_thread):
            start = time.perf_counter()
            call()
            mine.append((time.perf_counter() - start) * 1e3)
        with lock:
            latencies.extend(mine)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    return summarize(latencies, time.perf_counter() - start)


def load_signatures(bases) -> dict:
    """Per model: the SavedModel (kept alive), its serving_default, and the server's direct call of it."""
    callers = {}
    for model, base in bases.items():
        loaded = tf.saved_model.load(os.path.join(base, "1"))
        function = loaded.signatures["serving_default"]
        callers[model] = (loaded, function, direct_call(function))
    return callers


def in_process_round(callers, inputs, levels, requests) -> dict:
    results = {}
    for model, array in inputs.items():
        _, function, direct = callers[model]
        tensor = tf.constant(array)
        # What a Python caller of the SavedModel does: numpy in, numpy out.
        results[f"in_process/{model}"] = {
            f"c{c}": drive(lambda: function(inputs=tf.constant(array))["logits"].numpy(), c, requests)
            for c in levels}
        # The server's own call (direct_call) on a ready tensor: the floor no server can go below.
        results[f"in_process_tensor/{model}"] = {
            f"c{c}": drive(lambda: direct(inputs=tensor), c, requests) for c in levels}
    return results


def warm_up(servers: dict[str, ServerProcess], inputs, concurrency: int, requests: int) -> None:
    """Untimed load on every server, protocol and model before the rounds. A batching server
    meets a new batch shape at almost every size up to its largest batch, and TensorFlow's
    first call at a shape costs several times a warm one; the rounds measure the steady state."""
    for server in servers.values():
        for protocol, target in (("grpc", server.grpc_target), ("rest", server.rest_target)):
            for model, array in inputs.items():
                measure_latency(target, protocol, model, array, concurrency=concurrency, requests=requests)


def server_round(servers: dict[str, ServerProcess], inputs, levels, requests, min_seconds) -> dict:
    """Every point on every server; the servers alternate point by point, so drift hits all alike."""
    results = {name: {} for name in servers}
    for protocol in ("grpc", "rest"):
        for model, array in inputs.items():
            for c in levels:
                for name, server in servers.items():
                    target = server.grpc_target if protocol == "grpc" else server.rest_target
                    results[name].setdefault(f"{protocol}/{model}", {})[f"c{c}"] = measure_latency(
                        target, protocol, model, array, concurrency=c, requests=requests,
                        min_seconds=min_seconds)
    return results


def median_points(rounds: list[dict]) -> dict:
    """{series: {level: point}} with each number the median over rounds (of those measured)."""
    def median(values):
        values = [value for value in values if value is not None]
        return statistics.median(values) if values else None

    return {series: {level: {key: median(r[series][level][key] for r in rounds)
                             if isinstance(value, (int, float)) or value is None else value
                             for key, value in point.items()}
                     for level, point in levels.items()}
            for series, levels in rounds[0].items()}


def round_ratios(plain: list[dict], other: list[dict], series: str, level: str) -> list[float]:
    """Other/plain requests/s in each round (their median is the reported speedup or ratio)."""
    return [round(o[series][level]["requests_per_s"] / p[series][level]["requests_per_s"], 2)
            for p, o in zip(plain, other)]


def main() -> None:
    args = parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    server_cpus, client_cpus = split_cpus()
    pin_process(server_cpus)  # training and the in-process calls run where the servers will
    configurations = [("no_batching", []), ("batching", BATCHING)]
    rounds = {"in_process": [], "no_batching": [], "batching": []}
    with tempfile.TemporaryDirectory() as workdir, contextlib.ExitStack() as stack:
        bases = {"digits": export_config("digits_cnn", workdir, args.train_steps),
                 "gpt": export_config("gpt_tiny", workdir, args.train_steps)}
        config_file = write_model_config(bases, os.path.join(workdir, "models.config"))
        inputs = {"digits": (load_digits().images[:1] / 16.0).astype(np.float32),
                  "gpt": np.frombuffer((b"def __init__(self, *args):\n" * 3)[:64], np.uint8).astype(np.int32)[None]}
        flags = ["--host=127.0.0.1", f"--model_config_file={config_file}", "--file_system_poll_wait_seconds=0"]
        log_dir = os.path.join(workdir, "request_logs")
        if args.request_log:
            configurations.append(("request_log", [f"--request_log_dir={log_dir}", "--request_log_sampling_rate=1"]))
            rounds["request_log"] = []
        servers = {name: stack.enter_context(ServerProcess(
                       flags + extra, model_name="digits", log_path=os.path.join(workdir, f"{name}.log"),
                       engine="embedded", cpus=server_cpus))
                   for name, extra in configurations}
        callers = load_signatures(bases)
        pin_process(client_cpus)
        warm_up(servers, inputs, max(levels), args.warmup_requests)
        for _ in range(args.rounds):
            pin_process(server_cpus)
            rounds["in_process"].append(in_process_round(callers, inputs, levels, args.requests))
            pin_process(client_cpus)
            for name, results in server_round(servers, inputs, levels, args.requests,
                                              args.min_seconds).items():
                rounds[name].append(results)
        log_files = len(os.listdir(log_dir)) if args.request_log else 0
    medians = {name: median_points(results) for name, results in rounds.items()}
    c1, top = f"c{levels[0]}", f"c{levels[-1]}"

    def overhead(protocol: str, baseline: str) -> float:
        return round(medians["no_batching"][f"{protocol}/digits"][c1]["p50_ms"]
                     - medians["in_process"][f"{baseline}/digits"][c1]["p50_ms"], 3)

    speedup_series = {f"batching_speedup_{top}": "grpc/digits", f"batching_speedup_{top}_rest": "rest/digits",
                      f"batching_speedup_{top}_gpt": "grpc/gpt"}
    speedup_rounds = {name: round_ratios(rounds["no_batching"], rounds["batching"], series, top)
                      for name, series in speedup_series.items()}
    log_rounds = {}
    if args.request_log:
        log_rounds = {f"request_log_throughput_ratio_{top}{suffix}": round_ratios(
                          rounds["no_batching"], rounds["request_log"], series, top)
                      for suffix, series in (("", "grpc/digits"), ("_rest", "rest/digits"), ("_gpt", "grpc/gpt"))}
    summary = {
        "grpc_overhead_p50_ms": overhead("grpc", "in_process"),
        "rest_overhead_p50_ms": overhead("rest", "in_process"),
        "grpc_overhead_vs_tensor_call_p50_ms": overhead("grpc", "in_process_tensor"),
        "rest_overhead_vs_tensor_call_p50_ms": overhead("rest", "in_process_tensor"),
        **{name: round(statistics.median(ratios), 2) for name, ratios in {**speedup_rounds, **log_rounds}.items()},
    }
    print(json.dumps({"benchmark": "serve", "cpus": {"server": sorted(server_cpus),
                                                      "load_generator": sorted(client_cpus)},
                      "requests_per_point": args.requests, "min_seconds_per_server_point": args.min_seconds,
                      "rounds": args.rounds,
                      "warmup_requests": args.warmup_requests, "batching_flags": BATCHING,
                      "request_log_files": log_files,
                      "summary": summary, "batching_speedup_per_round": speedup_rounds,
                      "request_log_ratio_per_round": log_rounds, **medians}, indent=1))


if __name__ == "__main__":
    main()
