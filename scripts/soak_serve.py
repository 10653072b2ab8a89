"""Soak a real embedded server: mixed traffic while versions come and go and labels move.

Builds the same two models as `fuzz_serve.py` (the digits CNN and the
hand-made `mixed` SavedModel) and starts `tfbig serve --engine=embedded` on a
models.config that it polls (`--model_config_file_poll_wait_seconds`) and on
model directories it polls (`--file_system_poll_wait_seconds`). For
`--minutes` minutes, `--threads` threads send traffic on both protocols
(`--rest-fraction` REST), while a background thread changes what is served
every `--churn-seconds`:

- digits, labelled through tfbig's lifecycle registry (what `tfbig models
  promote/rollback/prune-old --server` do): a new integer version is copied in
  atomically (into a hidden name, then renamed), marked validated, labelled
  `canary`, then `stable` (each move a live load -> relabel -> unload
  roll-over on the server), every fourth cycle `stable` is rolled back and
  promoted again, and unlabelled old versions are pruned from disk;
- mixed, served by the default `latest` policy: a new version is copied in
  atomically and the oldest directory removed (renamed away, then deleted)
  once there are more than two.

Traffic is of three sorts. *Valid* requests name a label (`stable`,
`canary`) or no version (the latest), which stay served through every switch:
any answer but OK with the signature's outputs is a failure. *Pinned*
requests name the version the churn thread last made current, or the one
before; NOT_FOUND and UNAVAILABLE (404, 503) are what TF Serving answers for
a version that is not (yet, or any more) loaded, so they are counted as
`transient`, any other error as failed. *Malformed* requests come from
`scripts/malformed.py` (without the heavy ones, whose allocations would
swamp the memory slope) and are counted by answer.

Every `--sample-seconds` the server's RSS, threads and open fds are sampled;
the report gives each one's least-squares slope per minute over the run
after `--warmup-seconds`, and over the second half of that, which the targets
judge (see `resource_trend`).

    python scripts/soak_serve.py [--minutes 10] [--threads 4] [--seed 0] [--churn-seconds 10]

Prints one JSON object (valid sent/failed, pinned, malformed answers by code
and server errors with examples, churn counts and errors, the slopes, a final
correctness check) and exits 1 on a crash, a failed valid or pinned request,
a churn error, a failed final check, or a second-half slope above
`--max-rss-slope` (MB/min), `--max-threads-slope` or `--max-fds-slope` (per
minute).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzz_serve  # noqa: E402  (imports tfbig before TensorFlow)
import malformed  # noqa: E402
from fuzz_serve import DIGITS_FEATURES, Server, Tally, Watcher  # noqa: E402

from tfbig.lifecycle import ModelRegistry  # noqa: E402

LABELS = ("stable", "canary")
# What TF Serving answers a request for a version that is not (yet, or any more) loaded.
TRANSIENT = {"NOT_FOUND", "UNAVAILABLE", "404", "503"}


def copy_version(base: str, source: int, version: int) -> str:
    """A copy of version `source` as `version`, appearing at once: copied under a hidden name
    (a server ignores what is not an integer) and renamed into place."""
    staging = tempfile.mkdtemp(prefix=f".staging-{version}-", dir=base)
    shutil.copytree(os.path.join(base, str(source)), os.path.join(staging, "v"))
    os.rename(os.path.join(staging, "v"), os.path.join(base, str(version)))
    os.rmdir(staging)
    return os.path.join(base, str(version))


def remove_version(base: str, version: int) -> None:
    retired = tempfile.mkdtemp(prefix=".retired-", dir=base)
    os.rename(os.path.join(base, str(version)), os.path.join(retired, str(version)))
    shutil.rmtree(retired)


def integer_versions(base: str) -> list[int]:
    return sorted(int(name) for name in os.listdir(base) if name.isdigit())


class Churn(threading.Thread):
    """Adds, labels and removes versions until `stop` is set."""

    def __init__(self, bases: dict[str, str], config_file: str, grpc_target: str, period_s: float):
        super().__init__(daemon=True, name="churn")
        self.bases, self.grpc_target, self.period_s = bases, grpc_target, period_s
        self.registry = ModelRegistry(bases["digits"], model_name="digits", config_file=config_file)
        self.stop = threading.Event()
        self.counts = collections.Counter()
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.current = {"digits": 1, "mixed": 1}  # what pinned requests name
        self.previous = {"digits": 1, "mixed": 1}

    def pinned(self, model: str, rng: random.Random) -> int:
        with self.lock:
            return self.current[model] if rng.random() < 0.7 else self.previous[model]

    def _set_current(self, model: str, version: int) -> None:
        with self.lock:
            self.previous[model], self.current[model] = self.current[model], version

    def _promote(self, version: int, label: str) -> None:
        self.registry.promote(version, label, server=self.grpc_target)
        self.counts["label_moves"] += 1

    def cycle(self, index: int) -> None:
        digits = self.bases["digits"]
        version = max(integer_versions(digits)) + 1
        copy_version(digits, self.current["digits"], version)
        self.counts["digits_versions_added"] += 1
        self.registry.record_validation(version, {"passed": True, "note": "a copy made by soak_serve"})
        self._promote(version, "canary")
        self.stop.wait(self.period_s / 3)
        self._promote(version, "stable")
        self._set_current("digits", version)
        if index % 4 == 3:
            self.registry.rollback("stable", server=self.grpc_target)
            self.counts["rollbacks"] += 1
            self._promote(version, "stable")
        removed = self.registry.prune_old(keep=2)
        self.counts["digits_versions_removed"] += len(removed)

        mixed = self.bases["mixed"]
        versions = integer_versions(mixed)
        copy_version(mixed, versions[-1], versions[-1] + 1)
        self.counts["mixed_versions_added"] += 1
        self._set_current("mixed", versions[-1] + 1)
        for old in integer_versions(mixed)[:-2]:
            remove_version(mixed, old)
            self.counts["mixed_versions_removed"] += 1

    def run(self) -> None:
        index = 0
        while not self.stop.wait(self.period_s * 2 / 3):
            try:
                self.cycle(index)
            except Exception as error:  # reported; the soak goes on
                self.errors.append(f"cycle {index}: {type(error).__name__}: {error}"[:400])
            index += 1

    def report(self) -> dict:
        return {**dict(self.counts), "labels_at_end": self.registry.labels(),
                "digits_versions_at_end": integer_versions(self.bases["digits"]),
                "mixed_versions_at_end": integer_versions(self.bases["mixed"]), "errors": self.errors}


class Pinned:
    """Answers to requests pinned to a version: OK, transient (version not loaded) or failed."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = 0
        self.answers = collections.Counter()
        self.failed: list[dict] = []
        self.failed_count = 0

    def add(self, case: malformed.Case, answer) -> None:
        with self.lock:
            self.sent += 1
            self.answers[f"{case.protocol}:{answer.code}"] += 1
            if not fuzz_serve.answer_is_valid(case, answer) and answer.code not in TRANSIENT:
                self.failed_count += 1
                if len(self.failed) < fuzz_serve.MAX_EXAMPLES:
                    self.failed.append({"protocol": case.protocol, "path": case.path or case.rpc,
                                        "code": answer.code, "message": answer.message[:300]})

    def report(self) -> dict:
        return {"sent": self.sent, "answers": dict(sorted(self.answers.items())),
                "failed": self.failed_count, "examples": self.failed}


def traffic(signatures, churn: Churn, args):
    """Cases without end: valid (by label or latest), pinned to a version, or malformed."""
    rng = random.Random(args.seed)

    def by_label(model: str):
        return (None, rng.choice(LABELS + (None,))) if model == "digits" else (None, None)

    def by_version(model: str):
        return (churn.pinned(model, rng), None)

    labelled = malformed.Generator(signatures, random.Random(rng.getrandbits(64)),
                                   example_features=DIGITS_FEATURES, valid_spec=by_label)
    pinned = malformed.Generator(signatures, random.Random(rng.getrandbits(64)),
                                 example_features=DIGITS_FEATURES, valid_spec=by_version)
    while True:
        protocol = "rest" if rng.random() < args.rest_fraction else "grpc"
        draw = rng.random()
        if draw < args.valid_fraction:
            yield labelled.valid(protocol)
        elif draw < args.valid_fraction + args.pinned_fraction:
            case = pinned.valid(protocol)
            case.valid, case.kind = False, "pinned_" + case.kind
            yield case
        else:
            yield labelled.case(protocol, valid_fraction=0.0, allow_heavy=False)


def slope_per_minute(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) pairs, per minute."""
    if len(samples) < 3:
        return None
    t = [s for s, _ in samples]
    v = [x for _, x in samples]
    mean_t, mean_v = sum(t) / len(t), sum(v) / len(v)
    variance = sum((x - mean_t) ** 2 for x in t)
    if not variance:
        return None
    return 60.0 * sum((x - mean_t) * (y - mean_v) for x, y in zip(t, v)) / variance


def resource_trend(samples, key: str, after_s: float) -> dict:
    """First, last, range and least-squares slopes of one resource after `after_s`: over all of
    that, and over its second half, which the targets judge: caches that fill with each new
    request seen (TensorFlow keeps ~160 bytes per input shape a function has run on) rise early
    and level off, where a leak keeps its slope."""
    points = [(t, stats[key]) for t, stats in samples if t >= after_s]
    middle = (points[0][0] + points[-1][0]) / 2 if points else 0.0

    def rounded(slope):
        return None if slope is None else round(slope, 3)

    return {"first": round(points[0][1], 1) if points else None, "last": round(points[-1][1], 1) if points else None,
            "min": round(min(v for _, v in points), 1) if points else None,
            "max": round(max(v for _, v in points), 1) if points else None,
            "slope_per_min": rounded(slope_per_minute(points)),
            "second_half_slope_per_min": rounded(slope_per_minute([p for p in points if p[0] >= middle]))}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long traffic runs (default 10)")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rest-fraction", type=float, default=2 / 3)
    parser.add_argument("--valid-fraction", type=float, default=0.4, help="share of valid requests by label/latest")
    parser.add_argument("--pinned-fraction", type=float, default=0.1, help="share of requests pinned to a version")
    parser.add_argument("--churn-seconds", type=float, default=10.0, help="one version change cycle this often")
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--warmup-seconds", type=float, default=20.0,
                        help="traffic before the slopes start counting (pools fill, caches settle)")
    parser.add_argument("--max-rss-slope", type=float, default=1.0,
                        help="MB per minute over the run's second half (default 1)")
    parser.add_argument("--max-threads-slope", type=float, default=1.0, help="per minute, second half (default 1)")
    parser.add_argument("--max-fds-slope", type=float, default=1.0, help="per minute, second half (default 1)")
    parser.add_argument("--memory-headroom-gb", type=float, default=4.0)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--workdir", help="keep the models and the server log here (default: a temporary dir)")
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="soak_serve-"))
        os.makedirs(workdir, exist_ok=True)
        bases = fuzz_serve.prepare_models(workdir, args.train_steps)
        config = fuzz_serve.write_model_config(os.path.join(workdir, "models.config"), bases,
                                               labels={"digits": {label: 1 for label in LABELS}},
                                               versions={"digits": [1]})
        server = Server([f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=5",
                         "--file_system_poll_wait_seconds=1"], os.path.join(workdir, "server.log"))
        stack.callback(server.stop)
        server.wait_available(sorted(bases))
        signatures = fuzz_serve.fetch_signatures(server, sorted(bases))
        before_answers = fuzz_serve.answers_of(server)
        server.limit_memory(args.memory_headroom_gb)

        churn = Churn(bases, config, server.grpc_target, args.churn_seconds)
        valid, bad, pinned = Tally(), Tally(), Pinned()

        def record(case, answer):
            if case.kind.startswith("pinned_"):
                pinned.add(case, answer)
            else:
                (valid if case.valid else bad).add(case, answer)

        watcher = Watcher(server, sample_every_s=args.sample_seconds)
        watcher.start()
        churn.start()
        traffic_start = time.monotonic()
        crash = fuzz_serve.run_cases(traffic(signatures, churn, args), server, watcher, record,
                                     threads=args.threads, timeout_s=args.timeout,
                                     stop_at=traffic_start + args.minutes * 60)
        churn.stop.set()
        churn.join()
        watcher.stop()
        final = None
        if crash is None:
            final = fuzz_serve.compare_answers(before_answers, fuzz_serve.answers_of(server))
        warm = traffic_start - watcher.start_time + args.warmup_seconds
        counts, valid_counts = bad.report(), valid.report()
        report = {
            "benchmark": "soak_serve", "minutes": args.minutes, "threads": args.threads, "seed": args.seed,
            "churn_seconds": args.churn_seconds,
            "valid": {**valid_counts["valid"], "answers": valid_counts["answers"]},
            "pinned": pinned.report(),
            "malformed": {"requests": counts["requests"], "answers": counts["answers"],
                          "server_errors": counts["server_errors"]},
            "no_answer": {"count": counts["no_answer"]["count"] + valid_counts["no_answer"]["count"],
                          "examples": (counts["no_answer"]["examples"] + valid_counts["no_answer"]["examples"])[:10]},
            "churn": churn.report(),
            "crashes": {"count": int(crash is not None), **({"detail": crash} if crash else {})},
            "resources": {"samples": sum(1 for t, _ in watcher.samples if t >= warm),
                          "sample_seconds": args.sample_seconds, "after_warmup_s": args.warmup_seconds,
                          "rss_mb": resource_trend(watcher.samples, "rss_mb", warm),
                          "threads": resource_trend(watcher.samples, "threads", warm),
                          "open_fds": resource_trend(watcher.samples, "fds", warm)},
            "final_check": final or {"ok": False, "problems": ["the server had exited"]},
        }
        slopes = {key: report["resources"][key]["second_half_slope_per_min"] for key in ("rss_mb", "threads", "open_fds")}
        limits = {"rss_mb": args.max_rss_slope, "threads": args.max_threads_slope, "open_fds": args.max_fds_slope}
        missed = [name for name, ok in (
            ("crashes", crash is None), ("valid_failed", valid_counts["valid"]["failed"] == 0),
            ("pinned_failed", pinned.failed_count == 0), ("no_answer", report["no_answer"]["count"] == 0),
            ("churn_errors", not churn.errors), ("final_check", report["final_check"]["ok"]),
            *((f"{key}_slope", slopes[key] is not None and slopes[key] <= limits[key]) for key in slopes)) if not ok]
        report["targets"] = {"crashes": 0, "valid_failed": 0, "pinned_failed": 0, "no_answer": 0, "churn_errors": 0,
                             **{f"{key}_second_half_slope_per_min_at_most": limits[key] for key in limits}}
        report["missed"] = missed
        report["passed"] = not missed
        report["seconds"] = round(time.monotonic() - start, 1)
    print(json.dumps(report, indent=1))
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
