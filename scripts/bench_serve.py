"""Serving latency and throughput: in-process call vs the embedded server over gRPC and REST.

Trains and exports the shipped digits CNN and GPT configs for a few steps,
starts `tfbig serve --engine embedded` in a subprocess (without and with
server-side batching), and drives it from this process with the bundled
AsyncClient at several concurrencies (coroutines on one thread). The
in-process baselines call the same SavedModel's serving_default from as many
threads: numpy in and numpy out (`in_process`, what a Python caller does) and
on a ready tensor (`in_process_tensor`, the floor).
Per point: p50/p99 latency (ms) and requests/s. One request = one CNN image
(batch 1) or one GPT window of 64 tokens.

    python scripts/bench_serve.py [--requests 300] [--concurrency 1,8,32]

Prints one JSON object; `summary` holds grpc_overhead_p50_ms and
rest_overhead_p50_ms (CNN, concurrency 1, p50 over the numpy in-process call; the
`_vs_tensor_call` ones over the bare call) and
batching_speedup_c32 (CNN gRPC requests/s with batching over without, at 32).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
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
from tfbig.train import train


CONFIGS = os.path.join(os.path.dirname(tfbig.__file__), "configs")
BATCHING = ["--enable_batching", "--max_batch_size=32", "--batch_timeout_micros=2000",
            "--num_batch_threads=1", "--max_enqueued_batches=1000"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="timed requests per point")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--train-steps", type=int, default=10)
    return parser.parse_args()


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


def bench_server(config_file, extra, inputs, levels, requests) -> dict:
    results = {}
    flags = ["--host=127.0.0.1", f"--model_config_file={config_file}", "--file_system_poll_wait_seconds=0",
             *extra]
    log_path = os.path.join(os.path.dirname(config_file), "serve.log")
    with ServerProcess(flags, model_name="digits", log_path=log_path, engine="embedded") as server:
        for protocol, target in (("grpc", server.grpc_target), ("rest", server.rest_target)):
            for model, array in inputs.items():
                results[f"{protocol}/{model}"] = {
                    f"c{c}": measure_latency(target, protocol, model, array, concurrency=c, requests=requests)
                    for c in levels}
    return results


def main() -> None:
    args = parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as workdir:
        bases = {"digits": export_config("digits_cnn", workdir, args.train_steps),
                 "gpt": export_config("gpt_tiny", workdir, args.train_steps)}
        config_file = write_model_config(bases, os.path.join(workdir, "models.config"))
        inputs = {"digits": (load_digits().images[:1] / 16.0).astype(np.float32),
                  "gpt": np.frombuffer((b"def __init__(self, *args):\n" * 3)[:64], np.uint8).astype(np.int32)[None]}
        in_process = {}
        for model, array in inputs.items():
            function = tf.saved_model.load(os.path.join(bases[model], "1")).signatures["serving_default"]
            tensor = tf.constant(array)
            # What a Python caller of the SavedModel does: numpy in, numpy out.
            in_process[f"in_process/{model}"] = {
                f"c{c}": drive(lambda: function(inputs=tf.constant(array))["logits"].numpy(), c, args.requests)
                for c in levels}
            # The bare call on a ready tensor: the floor no server can go below.
            in_process[f"in_process_tensor/{model}"] = {
                f"c{c}": drive(lambda: function(inputs=tensor), c, args.requests) for c in levels}
        plain = bench_server(config_file, [], inputs, levels, args.requests)
        batched = bench_server(config_file, BATCHING, inputs, levels, args.requests)
    c1, top = f"c{levels[0]}", f"c{levels[-1]}"
    def overhead(protocol: str, baseline: str) -> float:
        return round(plain[f"{protocol}/digits"][c1]["p50_ms"] - in_process[f"{baseline}/digits"][c1]["p50_ms"], 3)

    summary = {
        "grpc_overhead_p50_ms": overhead("grpc", "in_process"),
        "rest_overhead_p50_ms": overhead("rest", "in_process"),
        "grpc_overhead_vs_tensor_call_p50_ms": overhead("grpc", "in_process_tensor"),
        "rest_overhead_vs_tensor_call_p50_ms": overhead("rest", "in_process_tensor"),
        f"batching_speedup_{top}": round(batched["grpc/digits"][top]["requests_per_s"]
                                         / plain["grpc/digits"][top]["requests_per_s"], 2),
        f"batching_speedup_{top}_gpt": round(batched["grpc/gpt"][top]["requests_per_s"]
                                             / plain["grpc/gpt"][top]["requests_per_s"], 2),
    }
    print(json.dumps({"benchmark": "serve", "cpu_count": os.cpu_count(), "requests_per_point": args.requests,
                      "batching_flags": BATCHING, "summary": summary, "in_process": in_process,
                      "no_batching": plain, "batching": batched}, indent=1))


if __name__ == "__main__":
    main()
