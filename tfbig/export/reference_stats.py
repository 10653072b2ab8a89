"""`assets.extra/reference_stats.json`: what a version's traffic should look like.

Written at export from bounded samples of the training and eval data and of
the model's answers on the eval sample (`tfbig.export.reference_sample`), and
listed in the manifest's checksums like every file of the version. A monitor
compares logged traffic (`PredictionLog` request and response tensors) with it
the way TFX Data Validation compares statistics: L-infinity distance between
category frequencies, approximate Jensen-Shannon divergence between
histograms over the same bins, normalized absolute difference of counts. So
the file stores what those need and nothing to recompute: bin edges with
counts, categories with counts, and where each feature comes from in a
request or response. The functions below (`histogram`, `category_counts`) are
how the reference counted; a monitor counts traffic with the same ones.

Format (`"format": "tfbig-reference-stats/1"`):

    task: "classification" | "lm";  examples: {split: rows sampled}
    bins, quantile_levels, top_k: the settings used
    features: {name: {
        kind: "numeric" | "categorical",
        source: "request" | "response" | "label" (training targets: no tensor),
        signature, tensor: the signature and its input/output name holding the value,
        element: for a per-element feature, the flat (row-major) index into one
                 example of that tensor: "inputs[12]" is inputs[:, 1, 4] of an
                 8x8 image, and entry 12 of the flattened float_list a
                 classify/regress tf.Example carries under `inputs`,
        derived: how the value is computed from the tensor, when it is not read
                 as is: "argmax" / "max_softmax" / "softmax" over the last axis
                 of logits, "utf8_bytes" (length of a string),
        numeric:     bin_edges (bins + 1 of them, from the first split's range),
        categorical: categories (strings, e.g. class or token ids),
        splits: {"train" | "eval": {
            count: values counted (not NaN/inf, which are in `non_finite`),
            numeric:     histogram: [below bin_edges[0], each bin, above
                         bin_edges[-1]] (bins + 2 counts, summing to count;
                         bins are [e_i, e_i+1), the last one closed),
                         quantiles (at quantile_levels), mean, std,
            categorical: counts: one per category, then one for all others
                         (len(categories) + 1, summing to count)}}}}

Request features have "train" and "eval" splits (skew: compare traffic with
"train"); model outputs and generation lengths only "eval". Token features
count every token id of every row; a `generate` prompt is tokenized as the
version's tokenizer does (bytes, or `assets.extra/tokenizer.model`).
"""

from __future__ import annotations

import json
import os

import numpy as np

from tfbig.export.versions import ASSETS_EXTRA
from tfbig.files import write_atomic

REFERENCE_STATS_FILE = os.path.join(ASSETS_EXTRA, "reference_stats.json")
FORMAT = "tfbig-reference-stats/1"
# TFDV's defaults: 10 histogram buckets, deciles.
BINS = 10
QUANTILE_LEVELS = tuple(i / 10 for i in range(11))
# Vocabularies up to this size are kept whole; larger ones keep their most frequent ids.
TOP_K = 1000
OTHER = "__other__"


def histogram(values, edges) -> np.ndarray:
    """Counts of the finite `values` below `edges[0]`, in each bin, above `edges[-1]`."""
    values = _finite(values)
    edges = np.asarray(edges, np.float64)
    inside = np.histogram(values, edges)[0]
    return np.concatenate([[np.sum(values < edges[0])], inside, [np.sum(values > edges[-1])]]).astype(np.int64)


def category_counts(values, categories: list[str]) -> np.ndarray:
    """Counts of each of `categories` among `values` (compared as strings), then of the rest."""
    keys, counts = np.unique(np.asarray(values).astype(str).ravel(), return_counts=True)
    found = dict(zip(keys.tolist(), counts.tolist()))
    known = [found.pop(category, 0) for category in categories]
    return np.asarray(known + [sum(found.values())], np.int64)


def numeric_edges(values, bins: int = BINS) -> list[float]:
    """`bins` equal bins over the range of `values`; a constant gets a bin of width 1 around it
    (a pixel that is always 0 still has bins for traffic that is not)."""
    values = _finite(values)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if low == high:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, bins + 1).tolist()


def top_categories(values, top_k: int = TOP_K) -> list[str]:
    """The `top_k` most frequent values as strings, most frequent first (ties by value)."""
    keys, counts = np.unique(np.asarray(values).astype(str).ravel(), return_counts=True)
    order = sorted(range(len(keys)), key=lambda i: (-counts[i], keys[i]))
    return [str(keys[i]) for i in order[:top_k]]


def numeric_feature(splits: dict, *, edges=None, **where) -> dict:
    """A numeric feature from {split: values}; edges from the first split unless given."""
    edges = numeric_edges(next(iter(splits.values()))) if edges is None else list(edges)
    return {"kind": "numeric", **where, "bin_edges": _rounded(edges),
            "splits": {name: _numeric_split(values, edges) for name, values in splits.items()}}


def categorical_feature(splits: dict, *, categories=None, **where) -> dict:
    """A categorical feature from {split: values}; the first split's top categories unless given."""
    categories = top_categories(next(iter(splits.values()))) if categories is None else list(categories)
    return {"kind": "categorical", **where, "categories": categories,
            "splits": {name: _categorical_split(values, categories) for name, values in splits.items()}}


def _numeric_split(values, edges) -> dict:
    raw = np.asarray(values).ravel()
    finite = _finite(raw)
    summary = {"count": int(finite.size), "non_finite": int(raw.size - finite.size),
               "histogram": histogram(finite, edges).tolist()}
    if finite.size:
        summary.update(quantiles=_rounded(np.quantile(finite, QUANTILE_LEVELS)),
                       mean=_rounded(finite.mean()), std=_rounded(finite.std()))
    return summary


def _categorical_split(values, categories) -> dict:
    counts = category_counts(values, categories)
    return {"count": int(counts.sum()), "counts": counts.tolist()}


def _finite(values) -> np.ndarray:
    values = np.asarray(values, np.float64).ravel()
    return values[np.isfinite(values)]


def _rounded(values):
    """Six significant digits: enough to compare distributions, a third of the file's size."""
    return np.vectorize(lambda v: float(f"{v:.6g}"), otypes=[float])(values).tolist()


def write_reference_stats(export_dir: str, stats: dict) -> str:
    """Compact JSON (a 64-pixel model has 64 features per split): read by programs."""
    path = os.path.join(export_dir, REFERENCE_STATS_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return write_atomic(path, json.dumps({"format": FORMAT, **stats}, separators=(",", ":")) + "\n")


def read_reference_stats(export_dir: str) -> dict | None:
    """The reference statistics of a version, or None for one exported without them."""
    try:
        with open(os.path.join(export_dir, REFERENCE_STATS_FILE), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
