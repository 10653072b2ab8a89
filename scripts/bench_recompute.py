"""Activation recomputation: peak memory and step time of a GPT training step.

Each setting runs in a fresh process: build the GPT, run one step (tracing
and first allocations), reset the kernel's peak-RSS counter
(/proc/self/clear_refs), run the timed steps, and report the peak resident
memory above what the process held before them — the step's transient
memory, activations kept for backprop first among them. On a GPU the
allocator's own peak is reported instead.

    python scripts/bench_recompute.py [--d-model 256] [--layers 4] [--seq-len 256] [--batch 16]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def measure(args) -> dict:
    """One setting, in this process."""
    import numpy as np

    import tfbig  # noqa: F401  (Keras 2 before TensorFlow loads)
    import tensorflow as tf
    import tf_keras as keras

    from tfbig import models
    from tfbig.config import GPTConfig
    from tfbig.data.spec import DataSpec
    from tfbig.train import losses

    cfg = GPTConfig(max_len=args.seq_len, d_model=args.d_model, num_layers=args.layers,
                    num_heads=args.heads, recompute=args.child == "on")
    model = models.build_model(cfg, DataSpec("lm", (args.seq_len,), "int32", 256))
    optimizer = keras.optimizers.SGD(1e-3)
    tokens = tf.constant(np.random.default_rng(0).integers(
        0, 256, (args.batch, args.seq_len)).astype(np.int32))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(losses.per_example_loss("lm", tokens, model(tokens, training=True)))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                      model.trainable_variables))
        return loss

    gpu = bool(tf.config.list_physical_devices("GPU"))
    step().numpy()
    if gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")
    else:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # reset VmHWM to the current RSS
    baseline_kib = status_kib("VmRSS")
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step().numpy()
        times.append(time.perf_counter() - start)
    if gpu:
        peak_mib = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    else:
        peak_mib = (status_kib("VmHWM") - baseline_kib) / 1024
    return {"step_peak_mib": round(peak_mib, 1),
            "step_ms": round(1000 * statistics.median(times), 1), "device": "gpu" if gpu else "cpu"}


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return
    results = {}
    for setting in ("off", "on"):
        done = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--child", setting],
            capture_output=True, text=True, check=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        results[f"recompute_{setting}"] = json.loads(done.stdout.strip().splitlines()[-1])
    off, on = results["recompute_off"], results["recompute_on"]
    print(json.dumps({
        "benchmark": "recompute",
        "model": {"d_model": args.d_model, "layers": args.layers, "seq_len": args.seq_len,
                  "batch": args.batch},
        **results,
        "memory_saved_fraction": round(1 - on["step_peak_mib"] / off["step_peak_mib"], 3),
        "step_time_ratio": round(on["step_ms"] / off["step_ms"], 2),
    }, indent=2))


if __name__ == "__main__":
    main()
