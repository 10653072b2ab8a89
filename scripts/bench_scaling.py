"""Data-parallel scaling: the same model and global batch under each strategy.

Trains one GPT for the same steps with the same global batch on one device,
mirrored over 2 replicas (logical CPUs here, GPUs where present),
multi_worker over 2 processes and parameter_server with 2 workers + 1 ps
(both started by `tfbig launch` on 127.0.0.1), each with `tfbig train`. Step
time is the median over the log windows after the first (which includes
tracing). `overhead_ms` is each setup's step time minus one device's: what
splitting the batch and communicating cost (or saved, if negative) on this
machine. On one CPU, the replicas and processes share the same cores, so the
figures measure overhead, not speedup.

    python scripts/bench_scaling.py [--steps 60] [--d-model 128] [--repeats 3]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

SETUPS = {
    "one_device": ([], {"strategy": "one_device"}),
    "mirrored_x2": ([], {"strategy": "mirrored", "devices": 2}),
    "multi_worker_x2": (["launch", "--workers", "2", "--"], {"strategy": "multi_worker"}),
    "parameter_server_2w_1ps": (["launch", "--workers", "2", "--ps", "1", "--"],
                                {"strategy": "parameter_server"}),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32, help="global batch")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds over all setups, interleaved; medians are reported")
    parser.add_argument("--only", choices=sorted(SETUPS), action="append",
                        help="run only these setups (repeatable)")
    return parser.parse_args()


def config(args, distribute: dict, run_dir: str) -> dict:
    return {
        "model": {"name": "gpt", "max_len": args.seq_len, "d_model": args.d_model,
                  "num_layers": args.layers, "num_heads": 4, "dropout": 0.0},
        "data": {"name": "text", "seq_len": args.seq_len},
        "train": {"steps": args.steps, "batch_size": args.batch, "log_every": args.log_every,
                  "steps_per_execution": max(1, args.log_every // 2),
                  "eval_every": 0, "eval_steps": 1,
                  "checkpoint_every": args.steps, "progress_bar": False,
                  "optimizer": {"name": "adam", "learning_rate": 1e-3},
                  "schedule": {"name": "constant"}},
        "distribute": distribute,
        "output": {"dir": run_dir},
    }


def run_setup(args, name: str, workdir: str) -> dict:
    launch, distribute = SETUPS[name]
    run_dir = os.path.join(workdir, name)
    path = os.path.join(workdir, f"{name}.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config(args, distribute, run_dir), f)
    tfbig = [sys.executable, "-m", "tfbig.cli"]
    command = [*tfbig, *launch, *tfbig, "train", path] if launch else [*tfbig, "train", path]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stdout[-3000:]}"
                         f"\n{done.stderr[-3000:]}")
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        windows = [json.loads(line) for line in f if '"examples_per_s"' in line]
    steady = [w["examples_per_s"] for w in windows[1:]] or [windows[0]["examples_per_s"]]
    examples_per_s = statistics.median(steady)
    return {
        "step_ms": round(1000 * args.batch / examples_per_s, 2),
        "examples_per_s": round(examples_per_s, 1),
        "tokens_per_s": round(examples_per_s * args.seq_len, 1),
        "wall_s": round(wall, 1),
        "final_loss": windows[-1]["loss"],
    }


def median_result(runs: list[dict]) -> dict:
    """The run with the median step time, and every round's step time."""
    ordered = sorted(runs, key=lambda r: r["step_ms"])
    return {**ordered[len(ordered) // 2], "step_ms_rounds": [r["step_ms"] for r in runs]}


def main() -> None:
    args = parse_args()
    names = args.only or list(SETUPS)
    rounds = {name: [] for name in names}
    for round_index in range(args.repeats):
        # Interleaved, so drift in the machine's load hits every setup alike.
        for name in names:
            with tempfile.TemporaryDirectory(prefix="tfbig-bench-scaling-") as workdir:
                rounds[name].append(run_setup(args, name, workdir))
    results = {name: median_result(runs) for name, runs in rounds.items()}
    base = results.get("one_device", {}).get("step_ms")
    if base:
        for result in results.values():
            result["overhead_ms"] = round(result["step_ms"] - base, 2)
    print(json.dumps({
        "benchmark": "scaling",
        "model": {"d_model": args.d_model, "layers": args.layers, "seq_len": args.seq_len},
        "global_batch": args.batch, "steps": args.steps, "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "setups": results,
    }, indent=2))


if __name__ == "__main__":
    main()
