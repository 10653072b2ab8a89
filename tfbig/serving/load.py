"""Latency under load: p50/p99 and requests/s of a served model at one concurrency.

`concurrency` coroutines send requests back to back over one AsyncClient, so
the load generator stays a single thread and takes as little CPU from the
server as it can (threads would contend for the GIL with each other). Used by
`tfbig pipeline` for its report and by scripts/bench_serve.py.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from tfbig.serving.client import AsyncClient, Credentials
from tfbig.serving.errors import ServingError

WARMUP_REQUESTS = 3


def summarize(latencies_ms: list[float], elapsed_s: float) -> dict:
    if not latencies_ms:
        return {"p50_ms": None, "p99_ms": None, "requests_per_s": 0.0}
    return {"p50_ms": round(float(np.percentile(latencies_ms, 50)), 3),
            "p99_ms": round(float(np.percentile(latencies_ms, 99)), 3),
            "requests_per_s": round(len(latencies_ms) / elapsed_s, 1)}


def measure_latency(target: str, protocol: str, model: str, inputs, *, concurrency: int,
                    requests: int, min_seconds: float = 0.0, signature: str | None = None,
                    label: str | None = None, credentials: Credentials | None = None) -> dict:
    """About `requests` timed predict calls in all (a multiple of `concurrency`), after a warmup,
    and more until `min_seconds` have passed: a fast server answers a fixed count in a fraction
    of a second, too short a window to measure its requests/s to a few percent.

    A failed request is counted in `errors`, not timed, and does not stop the run.
    """

    async def run():
        credentials_kwargs = (credentials or Credentials()).client_kwargs()
        async with AsyncClient(target, protocol=protocol, **credentials_kwargs) as client:
            call = lambda: client.predict(model, inputs, signature=signature, label=label)  # noqa: E731
            for _ in range(WARMUP_REQUESTS):
                await call()
            latencies, errors = [], 0

            async def worker():
                nonlocal errors
                sent = 0
                while sent < max(1, requests // concurrency) or time.perf_counter() < until:
                    sent += 1
                    start = time.perf_counter()
                    try:
                        await call()
                    except ServingError:
                        errors += 1
                        continue
                    latencies.append((time.perf_counter() - start) * 1e3)

            start = time.perf_counter()
            until = start + min_seconds
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return {"requests": len(latencies) + errors,
                    **summarize(latencies, time.perf_counter() - start), "errors": errors}

    return {"protocol": protocol, "concurrency": concurrency, **asyncio.run(run())}
