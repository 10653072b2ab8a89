"""Training throughput: tfbig's Trainer vs plain Keras `fit`, and MFU.

Both train the same GPT (same seed, optimizer, batch, steps_per_execution,
precision and jit) on the same pydoc-corpus pipeline, in one process, timed in
alternating repetitions so drift in machine load hits both alike. The dense
matmul peak is measured in the same run, in the compute dtype of the policy,
so `peak_fraction` is achieved model FLOP/s over what this machine really
does, not over a datasheet number.

    python scripts/bench_train.py                       # CPU, float32
    python scripts/bench_train.py --config gpt_laptop   # a shipped config's shape, 4 steps
    python scripts/bench_train.py --precision mixed_bfloat16 --jit \\
        --d-model 1024 --layers 8 --seq-len 512 --batch 32   # GPU

With --config the model, data and batch are the config's (shape flags still
override them) and, since such shapes take seconds a step on a CPU, the run
is a few steps (--steps 4 --repeats 1 --steps-per-execution 2 unless given).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import tfbig  # noqa: F401  (Keras 2 before TensorFlow loads)

import tensorflow as tf
import tf_keras as keras

from tfbig import data as tfdata
from tfbig import models
from tfbig.config import config_from_dict, config_to_dict, load_config
from tfbig.distribute import make_strategy
from tfbig.models import precision_policy
from tfbig.train import Trainer, make_optimizer


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="take the GPT, data and batch from this config "
                                         "(a shipped name such as gpt_laptop, or a path)")
    parser.add_argument("--d-model", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--seq-len", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--steps", type=int, help="timed steps per repetition")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--steps-per-execution", type=int)
    parser.add_argument("--precision", default="float32",
                        choices=["float32", "mixed_bfloat16", "mixed_float16"])
    parser.add_argument("--jit", action="store_true", help="XLA-compile the step")
    parser.add_argument("--strategy", default="one_device", choices=["one_device", "mirrored"])
    parser.add_argument("--matmul-size", type=int, default=0,
                        help="side of the peak-measuring matmul (0: 2048 on CPU, 8192 on GPU)")
    args = parser.parse_args()
    for key, value in (CONFIG_RUN if args.config else DEFAULT_RUN).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


# The GPT benchmarked without --config (the README's table), and how long
# each run is: a shipped config's shape takes seconds a step on a CPU.
DEFAULT_GPT = {"name": "gpt", "max_len": 128, "d_model": 512, "num_layers": 4, "num_heads": 8,
               "dropout": 0.0}
DEFAULT_RUN = {"steps": 10, "repeats": 3, "steps_per_execution": 10}
CONFIG_RUN = {"steps": 4, "repeats": 1, "steps_per_execution": 2}


def bench_config(args):
    """The benchmarked config: --config's (or the default GPT's) shape, the bench's training."""
    if args.config:
        shipped = config_to_dict(load_config(args.config))
        model, data, batch = shipped["model"], shipped["data"], shipped["train"]["batch_size"]
    else:
        model, data, batch = dict(DEFAULT_GPT), {"name": "text", "seq_len": 128}, 16
    flags = {"d_model": args.d_model, "num_layers": args.layers, "num_heads": args.heads}
    model.update({key: value for key, value in flags.items() if value is not None})
    if args.seq_len is not None:
        data["seq_len"] = args.seq_len
        model["max_len"] = max(model["max_len"], args.seq_len)
    return config_from_dict({
        "model": model,
        "data": data,
        "train": {"steps": 10**6, "batch_size": args.batch or batch,
                  "steps_per_execution": args.steps_per_execution,
                  "precision": args.precision, "jit_compile": args.jit,
                  "optimizer": {"name": "adamw", "learning_rate": 1e-4, "clip_norm": 1.0},
                  "schedule": {"name": "constant"}},
        "distribute": {"strategy": args.strategy},
    })


def measure_matmul_peak(size: int, dtype: tf.DType, repeats: int = 20) -> float:
    """Best FLOP/s of a square matmul chain, the machine's practical dense peak.

    Taken over both TensorFlow's own kernels and XLA's, whichever is faster
    here, so the fraction is never flattered by a slow reference.
    """
    a = tf.random.normal([size, size], dtype=tf.float32)
    a = tf.cast(a / size**0.5, dtype)
    best = 0.0
    for jit in (False, True):
        @tf.function(jit_compile=jit)
        def chain(x):
            for _ in tf.range(repeats):
                x = tf.matmul(x, a)
            return x

        chain(a).numpy()
        for _ in range(3):
            start = time.perf_counter()
            chain(a).numpy()
            best = max(best, 2 * size**3 * repeats / (time.perf_counter() - start))
    return best


def time_tfbig(trainer: Trainer, iterator, steps: int) -> float:
    start = time.perf_counter()
    trainer.train_steps(iterator, tf.constant(steps, tf.int64))
    float(trainer.train_loss.result())  # wait for the device
    return time.perf_counter() - start


def time_fit(model: keras.Model, dataset, steps: int) -> float:
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    return time.perf_counter() - start


def main():
    args = parse_args()
    config = bench_config(args)
    strategy = make_strategy(config.distribute)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    with precision_policy(config.train.precision):
        compute_dtype = tf.as_dtype(keras.mixed_precision.global_policy().compute_dtype)
        source = tfdata.load_data(config.data)
        keras.utils.set_random_seed(0)
        with strategy.scope():
            tfbig_model = models.build_model(config.model, source.spec)
            trainer = Trainer(
                model=tfbig_model, optimizer=make_optimizer(config.train), strategy=strategy,
                source=source, config=config.train, run_dir=tempfile.mkdtemp(),
            )
            keras.utils.set_random_seed(0)
            fit_model = models.build_model(config.model, source.spec)
            fit_optimizer = make_optimizer(config.train)
            fit_optimizer.global_clipnorm = config.train.optimizer.clip_norm
            fit_model.compile(
                optimizer=fit_optimizer,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                steps_per_execution=config.train.steps_per_execution,
                jit_compile=config.train.jit_compile,
            )
        fit_dataset = source.train.make_dataset(
            batch_size=config.train.batch_size, shuffle=True, seed=0, repeat=True
        )
        iterator = trainer.train_iterator()
        warmup = 2 * config.train.steps_per_execution
        time_tfbig(trainer, iterator, warmup)
        time_fit(fit_model, fit_dataset, warmup)
        tfbig_times, fit_times = [], []
        for _ in range(args.repeats):
            tfbig_times.append(time_tfbig(trainer, iterator, args.steps))
            fit_times.append(time_fit(fit_model, fit_dataset, args.steps))
        size = args.matmul_size or (8192 if gpu else 2048)
        peak = measure_matmul_peak(size, compute_dtype)

    batch, seq_len = config.train.batch_size, config.data.seq_len
    stats = models.model_stats(config.model, source.spec, batch_size=batch,
                               precision=args.precision, optimizer="adamw")
    tokens = args.steps * batch * seq_len
    tfbig_tps = tokens / statistics.median(tfbig_times)
    fit_tps = tokens / statistics.median(fit_times)
    flops_per_token = stats["train_flops_per_token"]
    print(json.dumps({
        "device": "gpu" if gpu else "cpu",
        "device_name": _device_name(gpu),
        "strategy": args.strategy, "precision": args.precision, "jit_compile": args.jit,
        "config": args.config, "d_model": config.model.d_model,
        "layers": config.model.num_layers, "heads": config.model.num_heads,
        "vocab": source.spec.num_classes, "seq_len": seq_len, "batch": batch,
        "steps": args.steps, "repeats": args.repeats,
        "steps_per_execution": args.steps_per_execution,
        "parameters": stats["parameters"], "train_flops_per_token": flops_per_token,
        "tfbig_tokens_per_s": round(tfbig_tps, 1),
        "keras_fit_tokens_per_s": round(fit_tps, 1),
        "ratio": round(tfbig_tps / fit_tps, 3),
        "peak_flops": peak, "peak_matmul": f"{size}x{size} {compute_dtype.name}",
        "tfbig_flops": tfbig_tps * flops_per_token,
        "peak_fraction": round(tfbig_tps * flops_per_token / peak, 4),
        "keras_fit_peak_fraction": round(fit_tps * flops_per_token / peak, 4),
    }))


def _device_name(gpu: bool) -> str:
    if gpu:
        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
        return details.get("device_name", "GPU")
    return "CPU"


if __name__ == "__main__":
    main()
