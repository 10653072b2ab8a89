"""What compression buys on the shipped configs, measured against issue #4's quality bars.

Trains the shipped digits CNN (`tfbig/configs/digits_cnn.yaml`) and GPT
(`gpt_tiny.yaml`) to their configured step counts, then runs `tfbig compress`
on them:
  digits: prune 80% (bar: <= 1.0 accuracy point lost, gzip >= 3x smaller),
          QAT int8 TFLite (within 0.5 points, >= 3.5x smaller than the float
          SavedModel weights), PTQ int8 (within 1 point), clustering (16 values);
  gpt:    prune 50% (bar: eval perplexity within +5%), and as its control the
          same fine-tuning with nothing pruned (`dense-finetune`), which tells
          the effect of pruning from that of the extra training steps.
Every figure comes from `OUT/report.json` (measured on the deployable artifact).

    python scripts/bench_compress.py [--workdir DIR] [--only digits|gpt]

Prints one JSON object; training logs go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile

import tfbig  # noqa: F401  (Keras 2 before TensorFlow loads)

from tfbig.compress import compress_run
from tfbig.config import load_config
from tfbig.train import train

CONFIGS = os.path.join(os.path.dirname(tfbig.__file__), "configs")
RUNS = {
    "digits": ("digits_cnn", [
        ("prune", "prune", ["compress.steps=400", "compress.prune.target_sparsity=0.8"]),
        ("qat", "qat", ["compress.steps=200"]),
        ("ptq-int8", "ptq-int8", []),
        ("cluster", "cluster", ["compress.steps=200", "compress.cluster.clusters=16"]),
    ]),
    "gpt": ("gpt_tiny", [
        ("prune", "prune", ["compress.steps=300", "compress.prune.target_sparsity=0.5",
                            "compress.eval_steps=20"]),
        ("dense-finetune", "prune", ["compress.steps=300", "compress.prune.target_sparsity=0.0",
                                     "compress.eval_steps=20"]),
    ]),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", help="keep runs here (default: a temporary directory)")
    parser.add_argument("--only", choices=sorted(RUNS), help="one model only")
    return parser.parse_args()


def summary(method: str, before: dict, after: dict) -> dict:
    metric = "eval_accuracy" if "eval_accuracy" in before else "eval_perplexity"
    row = {
        "method": method, "metric": metric, "before": before[metric], "after": after[metric],
        "size_ratio": before["size_bytes"] / after["size_bytes"],
        "gzip_ratio": before["gzip_bytes"] / after["gzip_bytes"],
        "nonzero_fraction": after["nonzero_fraction"],
        "latency_ms_before": before["latency_ms"], "latency_ms_after": after["latency_ms"],
    }
    if metric == "eval_accuracy":
        row["accuracy_points_lost"] = 100 * (before[metric] - after[metric])
    else:
        row["perplexity_change_pct"] = 100 * (after[metric] / before[metric] - 1)
    return row


def main() -> None:
    args = parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_compress_")
    results = {"workdir": workdir, "runs": []}
    for name in [args.only] if args.only else sorted(RUNS):
        config_name, methods = RUNS[name]
        run_dir = os.path.join(workdir, config_name)
        config = load_config(os.path.join(CONFIGS, f"{config_name}.yaml"), [
            "train.progress_bar=false", f"output.dir={run_dir}"])
        with contextlib.redirect_stdout(sys.stderr):
            train(config)
            for label, method, overrides in methods:
                result = compress_run(run_dir, method=method, overrides=tuple(overrides),
                                      output_dir=os.path.join(workdir, f"{config_name}-{label}"))
                results["runs"].append({"model": config_name, "label": label,
                                        "overrides": overrides,
                                        **summary(method, result.before, result.after)})
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
