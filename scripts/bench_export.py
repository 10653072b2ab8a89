"""Inference latency of the exported artifacts, and what generate's KV cache saves.

Trains the shipped digits CNN and GPT configs for a few steps (latency does
not depend on how well a model is trained), exports each with ONNX and
float32 TFLite, then times on this CPU, per batch size:
  saved_model  - the exported SavedModel's serving_default in TensorFlow,
  onnxruntime  - model.onnx in ONNX Runtime (CPU provider),
  tflite       - model_float32.tflite in the LiteRT interpreter (XNNPACK),
for the CNN (8x8 digits) and the GPT forward pass (full max_len windows),
and tokens/s of the GPT's `generate` with and without the key/value cache.

    python scripts/bench_export.py [--repeats 50] [--new-tokens 96]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time

import tfbig  # noqa: F401  (Keras 2 before TensorFlow loads)

import numpy as np
import tensorflow as tf

from tfbig.config import load_config
from tfbig.export import export_run, restore_run
from tfbig.export.generate import make_generate
from tfbig.export.onnx import OnnxRunner
from tfbig.export.tflite import TFLiteRunner
from tfbig.train import train

CONFIGS = os.path.join(os.path.dirname(tfbig.__file__), "configs")
BATCH_SIZES = (1, 8, 64)
PROMPT = b"def __init__(self"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per point")
    parser.add_argument("--new-tokens", type=int, default=96, help="tokens generate produces")
    parser.add_argument("--train-steps", type=int, default=20)
    return parser.parse_args()


def train_and_export(config_name: str, workdir: str, steps: int):
    run_dir = os.path.join(workdir, config_name)
    config = load_config(os.path.join(CONFIGS, f"{config_name}.yaml"), [
        f"train.steps={steps}", f"train.steps_per_execution={steps}", f"train.log_every={steps}",
        f"train.checkpoint_every={steps}", "train.eval_every=0", "train.progress_bar=false",
        "distribute.strategy=one_device", f"output.dir={run_dir}",
    ])
    with contextlib.redirect_stdout(sys.stderr):  # stdout is for the JSON only
        train(config)
    export = export_run(run_dir, os.path.join(workdir, "models", config_name), onnx=True,
                        tflite=("float32",))
    return restore_run(run_dir), export


def latency_ms(call, repeats: int) -> dict:
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 3),
            "p90_ms": round(times[int(0.9 * (len(times) - 1))], 3)}


def forward_latencies(export, make_inputs, repeats: int) -> dict:
    loaded = tf.saved_model.load(export.path)
    predict = loaded.signatures["serving_default"]
    onnx = OnnxRunner(os.path.join(export.path, export.artifacts["onnx"]))
    tflite = TFLiteRunner(os.path.join(export.path, export.artifacts["tflite_float32"]),
                          num_threads=os.cpu_count())
    results = {}
    for batch in BATCH_SIZES:
        x = make_inputs(batch)
        tensor = tf.constant(x)
        results[f"batch_{batch}"] = {
            "saved_model": latency_ms(lambda: predict(inputs=tensor)["logits"].numpy(), repeats),
            "onnxruntime": latency_ms(lambda: onnx(x), repeats),
            "tflite": latency_ms(lambda: tflite(x), repeats),
        }
    return results


def generate_throughput(trained, new_tokens: int, repeats: int) -> dict:
    results = {}
    functions = {cached: make_generate(trained.model, trained.config.model, use_cache=cached)
                 for cached in (True, False)}
    for batch in (1, 8):
        prompts = tf.constant([PROMPT] * batch)
        args = dict(max_new_tokens=tf.constant(new_tokens), temperature=tf.constant(0.0),
                    top_k=tf.constant(0), seed=tf.constant(0, tf.int64))
        point = {}
        for cached, generate in functions.items():
            timing = latency_ms(lambda: generate(prompts, **args)["tokens"].numpy(),
                                max(3, repeats // 10))
            point["cached" if cached else "uncached"] = {
                **timing, "tokens_per_s": round(batch * new_tokens / timing["p50_ms"] * 1e3, 1)}
        point["cache_speedup"] = round(
            point["cached"]["tokens_per_s"] / point["uncached"]["tokens_per_s"], 2)
        results[f"batch_{batch}"] = point
    return results


def main():
    args = parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        cnn, cnn_export = train_and_export("digits_cnn", workdir, args.train_steps)
        gpt, gpt_export = train_and_export("gpt_tiny", workdir, args.train_steps)
        rng = np.random.default_rng(0)
        seq_len = gpt.config.model.max_len
        report = {
            "benchmark": "export",
            "cpu_count": os.cpu_count(),
            "tensorflow": tf.__version__,
            "cnn_forward": forward_latencies(
                cnn_export, lambda b: rng.random((b, 8, 8), dtype=np.float32), args.repeats),
            "gpt_forward": {"seq_len": seq_len, **forward_latencies(
                gpt_export, lambda b: rng.integers(0, 256, (b, seq_len), dtype=np.int32),
                args.repeats)},
            "gpt_generate": {"prompt_bytes": len(PROMPT), "new_tokens": args.new_tokens,
                             **generate_throughput(gpt, args.new_tokens, args.repeats)},
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
