"""Language models on a real corpus: data preparation, subword vs byte, generation, input.

The corpus is the Python standard library's own source (the interpreter's
`stdlib` directory, *.py, site-packages excluded; all of it unless cut at
`--corpus-mb`, in a stable hash order of the paths), so there is nothing to
download. It measures:

  prepare     - `prepare_dataset` (BPE) MB/s of input with 1 worker and with
                all cores, each in a fresh process; and the peak RSS of one
                process (1 worker: scan, tokenizer, tokenization and shards
                all in it) preparing the corpus once and 10 times over (ten
                copies, each file prefixed with its copy's own line, so none
                is a duplicate). The tokenizer sample (`--sample-mb`) is
                below the corpus size, so it is the same size for both.
  bpb         - held-out bits per byte (the trainer's `eval_bits_per_byte`
                over the whole eval split) of a SentencePiece GPT and a byte
                GPT of the same d_model, layers, sequence length, batch and
                steps, both trained with `data.name: tokens` on the corpus
                prepared with `--tokenizer bpe` and `byte`.
  generate    - `generate` tokens/s with the key/value cache and without, at
                `--new-tokens` on the gpt_laptop shape trained 2 steps on the
                BPE data (speed does not depend on training), greedy, one
                prompt, the tokenizer inside the graph.
  input       - tokens/s of the tokens data source's `make_dataset` batches
                alone, against the trainer's tokens/s (last logging window
                of the SentencePiece GPT above) on the same data and batch.

    python scripts/bench_lm.py [--corpus-mb 0] [--steps 300] [--vocab-size 2048]
    python scripts/bench_lm.py --corpus-mb 1 --sample-mb 0.3 --vocab-size 512 --steps 20 \
        --d-model 32 --layers 1 --heads 2 --copies 3 --new-tokens 16 --repeats 1   # a quick try

The defaults (the whole library, ~30 MB; a 4-layer d_model-128 GPT, vocabulary
2048, 300 steps of 16 x 128 tokens) take about 22 minutes on a
2-core CPU: 300 steps are enough for the two models to part clearly, not to
converge. MB are 10^6 bytes. Progress goes to stderr; prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time

import tfbig  # noqa: F401  (Keras 2 before TensorFlow loads)

import tensorflow as tf

from tfbig import data as tfdata
from tfbig.config import config_from_dict, config_to_dict, load_config
from tfbig.data.tokens import read_spec
from tfbig.export import restore_run
from tfbig.export.generate import make_generate
from tfbig.export.text_codec import codec_for
from tfbig.train import train

PROMPT = b"def __init__(self"
TARGETS = {
    "prepare_scaling": "prepare MB/s with all cores >= 0.8 x cores x with 1 process",
    "prepare_rss_ratio_10x": "peak RSS preparing the corpus 10 times over within 10 % of once",
    "bpb_ratio": "subword bits/byte <= 0.85 x byte bits/byte",
    "generate_cache_speedup": "generate with the KV cache >= 5x without",
    "input_over_train_ratio": "input pipeline tokens/s >= 10x the trainer's",
}

# Run in a fresh interpreter per measurement, with no TensorFlow loaded. Its peak
# RSS is VmHWM, which starts afresh at exec (getrusage's ru_maxrss would carry
# over the high-water mark of the forked benchmark process, TensorFlow and all).
PREPARE_CHILD = """
import json, sys, time
from tfbig.data.prepare import prepare_dataset
kwargs = json.loads(sys.argv[1])
start = time.perf_counter()
prepare_dataset(**kwargs)
seconds = time.perf_counter() - start
with open("/proc/self/status") as f:
    peak_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "peak_rss_kb": peak_kb}))
"""


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus-mb", type=float, default=0,
                        help="standard library source to use (0: all of it, ~30 MB)")
    parser.add_argument("--sample-mb", type=float, default=4.0,
                        help="tokenizer sample (keep it below the corpus size)")
    parser.add_argument("--vocab-size", type=int, default=2048, help="BPE vocabulary")
    parser.add_argument("--eval-fraction", type=float, default=0.02)
    parser.add_argument("--copies", type=int, default=10, help="the bigger corpus, in copies")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=300, help="training steps of each bpb model")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generate produces")
    parser.add_argument("--repeats", type=int, default=3, help="timed generate calls per point")
    parser.add_argument("--input-seconds", type=float, default=5.0, help="timing of the input pipeline")
    return parser.parse_args()


def log(message: str) -> None:
    print(f"[bench_lm {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def machine() -> str:
    with open("/proc/cpuinfo") as f:
        info = f.read()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                  if line.startswith("model name")), "unknown CPU")
    kind = "VM" if " hypervisor" in info else "machine"
    return f"{cores()}-core {kind} ({model})"


# ------------------------------------------------------------------ corpus


def stdlib_files(limit_bytes: int | None) -> list[str]:
    """Standard library *.py files in a stable hash order of their paths, up to `limit_bytes`."""
    root = sysconfig.get_paths()["stdlib"]
    found = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "site-packages" and not d.startswith("."))
        found += [os.path.relpath(os.path.join(directory, f), root) for f in files if f.endswith(".py")]
    found.sort(key=lambda path: hashlib.sha256(path.encode()).hexdigest())
    chosen, total = [], 0
    for path in found:
        if limit_bytes is not None and total >= limit_bytes:
            break
        chosen.append(path)
        total += os.path.getsize(os.path.join(root, path))
    return [os.path.join(root, path) for path in chosen]


def write_copies(files: list[str], directory: str, copies: int) -> int:
    """`copies` copies of `files` under `directory`, each file starting with its copy's line; bytes."""
    root, total = sysconfig.get_paths()["stdlib"], 0
    for copy in range(copies):
        for path in files:
            target = os.path.join(directory, f"copy{copy:03d}", os.path.relpath(path, root))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(path, "rb") as f:
                text = f"# copy {copy}\n".encode() + f.read()
            with open(target, "wb") as f:
                f.write(text)
            total += len(text)
    return total


# ----------------------------------------------------------------- prepare


def prepare_in_child(paths, output: str, **options) -> dict:
    """Seconds and peak RSS (MB) of `prepare_dataset(paths, output, **options)` in a fresh process."""
    kwargs = {"paths": list(paths), "output": output, "quiet": True, **options}
    result = subprocess.run([sys.executable, "-c", PREPARE_CHILD, json.dumps(kwargs)], check=True,
                            stdout=subprocess.PIPE, text=True)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return {"seconds": round(measured["seconds"], 2), "peak_rss_mb": round(measured["peak_rss_kb"] / 1024, 1)}


def bench_prepare(args, workdir: str, files: list[str]) -> tuple[dict, dict]:
    """The prepare figures, and the dataset directories for training ({"bpe": ..., "byte": ...})."""
    once, bigger = os.path.join(workdir, "once"), os.path.join(workdir, "bigger")
    once_bytes = write_copies(files, once, 1)
    bigger_bytes = write_copies(files, bigger, args.copies)
    options = {"tokenizer": "bpe", "vocab_size": args.vocab_size, "eval_fraction": args.eval_fraction,
               "sample_bytes": int(args.sample_mb * 1e6)}
    runs = {}
    for name, paths, nbytes, workers in (("once_1_worker", once, once_bytes, 1),
                                         ("once_all_cores", once, once_bytes, cores()),
                                         (f"{args.copies}x_1_worker", bigger, bigger_bytes, 1)):
        log(f"prepare {name}: {nbytes / 1e6:.1f} MB, {workers} worker(s)")
        run = prepare_in_child([paths], os.path.join(workdir, f"data-{name}"), workers=workers, **options)
        runs[name] = {"input_mb": round(nbytes / 1e6, 2), "workers": workers, **run,
                      "mb_per_s": round(nbytes / 1e6 / run["seconds"], 3)}
    log("prepare the byte data set")
    prepare_in_child([once], os.path.join(workdir, "data-byte"), tokenizer="byte",
                     eval_fraction=args.eval_fraction, workers=cores())
    one, every, big = runs["once_1_worker"], runs["once_all_cores"], runs[f"{args.copies}x_1_worker"]
    report = {
        "prepare_mb_per_s_1": one["mb_per_s"],
        "prepare_mb_per_s_all": every["mb_per_s"],
        "prepare_scaling": {"speedup": round(every["mb_per_s"] / one["mb_per_s"], 3), "cores": cores(),
                            "per_core": round(every["mb_per_s"] / one["mb_per_s"] / cores(), 3)},
        "prepare_rss_ratio_10x": round(big["peak_rss_mb"] / one["peak_rss_mb"], 3),
        "prepare_runs": runs,
        "prepare_options": options,
    }
    datasets = {"bpe": os.path.join(workdir, "data-once_all_cores"),
                "byte": os.path.join(workdir, "data-byte")}
    return report, datasets


# -------------------------------------------------------------------- train


def lm_config(args, data_dir: str, run_dir: str):
    """The bpb comparison's GPT on a prepared directory: only the data differs between the two."""
    log_every = max(args.steps // 5, 1)
    return config_from_dict({
        "model": {"name": "gpt", "max_len": args.seq_len, "d_model": args.d_model,
                  "num_layers": args.layers, "num_heads": args.heads, "dropout": 0.0},
        "data": {"name": "tokens", "paths": [data_dir], "seq_len": args.seq_len},
        "train": {"steps": args.steps, "batch_size": args.batch, "steps_per_execution": 10,
                  "log_every": log_every, "eval_every": 0, "eval_steps": 0,
                  "checkpoint_every": args.steps, "progress_bar": False,
                  "optimizer": {"name": "adamw", "learning_rate": args.learning_rate,
                                "weight_decay": 0.1, "beta_2": 0.99, "clip_norm": 1.0},
                  "schedule": {"name": "cosine", "warmup_steps": max(args.steps // 20, 1)}},
        "distribute": {"strategy": "one_device"},
        "output": {"dir": run_dir},
    })


def train_lm(args, data_dir: str, run_dir: str) -> dict:
    start = time.perf_counter()
    result = train(lm_config(args, data_dir, run_dir))
    spec = read_spec(data_dir)
    return {"vocab": spec["tokenizer"]["vocab_size"],
            "eval_bits_per_byte": round(result.eval_metrics["eval_bits_per_byte"], 4),
            "eval_loss": round(result.eval_metrics["eval_loss"], 4),
            "final_train_loss": round(result.train_metrics["loss"], 4),
            "train_tokens_per_s": round(result.train_metrics["tokens_per_s"], 1),
            "eval_bytes": spec["splits"]["eval"]["bytes"],
            "seconds": round(time.perf_counter() - start, 1)}


def bench_bpb(args, workdir: str, datasets: dict) -> dict:
    runs = {}
    for kind in ("bpe", "byte"):
        log(f"train the {kind} GPT: {args.steps} steps")
        runs[kind] = train_lm(args, datasets[kind], os.path.join(workdir, f"run-{kind}"))
    subword, byte = runs["bpe"]["eval_bits_per_byte"], runs["byte"]["eval_bits_per_byte"]
    return {"bpb_subword": subword, "bpb_byte": byte, "bpb_ratio": round(subword / byte, 3),
            "bpb_model": {"d_model": args.d_model, "layers": args.layers, "heads": args.heads,
                          "seq_len": args.seq_len, "batch": args.batch, "steps": args.steps,
                          "learning_rate": args.learning_rate},
            "bpb_runs": runs}


# ------------------------------------------------------------------- input


def input_tokens_per_s(config, seconds: float) -> float:
    """Tokens/s of the training split's batches alone, read as the trainer reads them."""
    source = tfdata.load_data(config.data)
    batches = iter(source.train.make_dataset(batch_size=config.train.batch_size, shuffle=True,
                                             seed=0, repeat=True))
    for _ in range(10):  # the first shards' reads and the pipeline's warm-up
        next(batches)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next(batches)
        count += 1
    return count * config.train.batch_size * config.data.seq_len / (time.perf_counter() - start)


def bench_input(args, workdir: str, datasets: dict, trainer_tokens_per_s: float) -> dict:
    log(f"input pipeline alone: {args.input_seconds:.0f} s")
    config = lm_config(args, datasets["bpe"], os.path.join(workdir, "unused"))
    input_tps = input_tokens_per_s(config, args.input_seconds)
    return {"input_over_train_ratio": round(input_tps / trainer_tokens_per_s, 1),
            "input_tokens_per_s": round(input_tps, 1), "trainer_tokens_per_s": trainer_tokens_per_s}


# ---------------------------------------------------------------- generate


def laptop_config(data_dir: str, run_dir: str, steps: int = 2):
    """gpt_laptop's model and batch on the BPE data, trained `steps` steps."""
    config = config_to_dict(load_config("gpt_laptop"))
    config["data"] = {"name": "tokens", "paths": [data_dir], "seq_len": config["data"]["seq_len"]}
    config["train"].update(steps=steps, steps_per_execution=1, log_every=steps, eval_every=0,
                           eval_steps=1, checkpoint_every=steps, progress_bar=False)
    config["output"]["dir"] = run_dir
    return config_from_dict(config)


def generate_tokens_per_s(generate, new_tokens: int, repeats: int) -> float:
    args = dict(max_new_tokens=tf.constant(new_tokens), temperature=tf.constant(0.0),
                top_k=tf.constant(0), seed=tf.constant(0, tf.int64))
    prompts = tf.constant([PROMPT])
    generate(prompts, **args)["tokens"].numpy()  # trace and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        generate(prompts, **args)["tokens"].numpy()
        times.append(time.perf_counter() - start)
    return new_tokens / statistics.median(times)


def bench_generate(args, workdir: str, datasets: dict) -> dict:
    log("train gpt_laptop 2 steps")
    config = laptop_config(datasets["bpe"], os.path.join(workdir, "run-laptop"))
    train(config)
    trained = restore_run(config.output.dir)
    codec = codec_for(trained.config.data)
    speeds = {}
    for cached in (True, False):
        log(f"generate {args.new_tokens} tokens, {'with' if cached else 'without'} the cache")
        generate = make_generate(trained.model, trained.config.model, codec=codec, use_cache=cached)
        speeds[cached] = generate_tokens_per_s(generate, args.new_tokens, args.repeats)
    return {"generate_cache_speedup": round(speeds[True] / speeds[False], 2),
            "generate": {"config": "gpt_laptop", "parameters": int(trained.model.count_params()),
                         "vocab": codec.sampled_ids, "prompt": PROMPT.decode(), "batch": 1,
                         "new_tokens": args.new_tokens, "repeats": args.repeats,
                         "cached_tokens_per_s": round(speeds[True], 1),
                         "uncached_tokens_per_s": round(speeds[False], 1)}}


# --------------------------------------------------------------------- main


def targets(report: dict) -> dict:
    met = {
        "prepare_scaling": report["prepare_scaling"]["speedup"] >= 0.8 * report["prepare_scaling"]["cores"],
        "prepare_rss_ratio_10x": abs(report["prepare_rss_ratio_10x"] - 1) <= 0.10,
        "bpb_ratio": report["bpb_ratio"] <= 0.85,
        "generate_cache_speedup": report["generate_cache_speedup"] >= 5,
        "input_over_train_ratio": report["input_over_train_ratio"] >= 10,
    }
    return {name: {"target": TARGETS[name], "met": met[name]} for name in TARGETS}


def main():
    args = parse_args()
    started = time.perf_counter()
    files = stdlib_files(int(args.corpus_mb * 1e6) if args.corpus_mb > 0 else None)
    now = datetime.datetime.now(datetime.timezone.utc)
    report = {"benchmark": "lm", "date": now.isoformat(timespec="seconds"),
              "machine": machine(), "cores": cores(), "tensorflow": tf.__version__,
              "command": " ".join(["python", "scripts/bench_lm.py", *sys.argv[1:]]),
              "corpus": {"source": "Python standard library *.py", "files": len(files),
                         "mb": round(sum(map(os.path.getsize, files)) / 1e6, 2)}}
    # The trainer's eval lines go to stdout: they join the progress on stderr.
    with tempfile.TemporaryDirectory() as workdir, contextlib.redirect_stdout(sys.stderr):
        prepared, datasets = bench_prepare(args, workdir, files)
        report.update(prepared)
        report.update(bench_bpb(args, workdir, datasets))
        report.update(bench_input(args, workdir, datasets, report["bpb_runs"]["bpe"]["train_tokens_per_s"]))
        report.update(bench_generate(args, workdir, datasets))
    report["targets"] = targets(report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
