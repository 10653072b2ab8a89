"""How far traffic is from a baseline: TFX Data Validation's three comparators, on counts.

TFDV (tensorflow_data_validation/anomalies/metrics.cc; the comparators are
`FeatureComparator` in tensorflow_metadata's schema.proto, used as a feature's
`skew_comparator` for serving vs training and `drift_comparator` for one span
vs the previous one) defines, and tfbig computes the same way:

- **L-infinity distance** (`infinity_norm`): max_i |p_i - q_i| over category
  frequencies, each side normalized by its own total. In [0, 1]; for
  categorical features.
- **Approximate Jensen-Shannon divergence** (`jensen_shannon_divergence`):
  (KL(P||M) + KL(Q||M)) / 2 with M = (P + Q) / 2 and KL in bits (log base 2),
  capped at 1, over histograms on the same buckets (TFDV re-buckets two
  histograms onto the union of their boundaries; tfbig counts traffic into
  the reference's own bins, so no re-bucketing is needed) or over category
  frequencies. In [0, 1]; for numeric and categorical features.
- **Normalized absolute difference** (`normalized_abs_difference`):
  max_i |x_i - y_i| / sum_i (x_i + y_i) over raw counts. schema.proto calls it
  "appropriate for comparing datasets that are expected to have similar
  absolute counts", so tfbig computes it only for drift (two windows of the
  same length), never against a reference sample of arbitrary size.

The buckets are the reference's: below the first edge, each bin, above the
last edge, and for categories one count per category plus one for all others;
values that are NaN or infinite form one more bucket on both sides. TFDV
leaves every comparator off until a schema sets its threshold; tfbig turns
L-infinity on for categorical and Jensen-Shannon on for numeric features, at
0.3 each (`tfbig.monitor.thresholds`), so a monitor says something without a
thresholds file. 0.3 is a starting point to tune per feature, not a
statistical bound: see the README's monitor section for what it flags.
"""

from __future__ import annotations

import numpy as np

LINF, JSD, NAD = "linf", "jsd", "nad"
MEASURES = (LINF, JSD, NAD)


def _frequencies(counts) -> np.ndarray:
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total <= 0:
        raise ValueError("cannot compare an empty distribution")
    return counts / total


def linf(p_counts, q_counts) -> float:
    """L-infinity distance between the frequencies of two count vectors over the same buckets."""
    return float(np.max(np.abs(_frequencies(p_counts) - _frequencies(q_counts))))


def jsd(p_counts, q_counts) -> float:
    """Jensen-Shannon divergence in bits of two count vectors over the same buckets, capped at 1."""
    p, q = _frequencies(p_counts), _frequencies(q_counts)
    m = (p + q) / 2

    def kl(a):  # terms with a_i = 0 contribute nothing; m_i > 0 wherever a_i > 0
        nonzero = a > 0
        return float(np.sum(a[nonzero] * np.log2(a[nonzero] / m[nonzero])))

    return min((kl(p) + kl(q)) / 2, 1.0)


def nad(x_counts, y_counts) -> float:
    """Normalized absolute difference of two count vectors: max_i |x_i - y_i| / sum(x + y)."""
    x, y = np.asarray(x_counts, np.float64), np.asarray(y_counts, np.float64)
    total = x.sum() + y.sum()
    if total <= 0:
        raise ValueError("cannot compare an empty distribution")
    return float(np.max(np.abs(x - y)) / total)


def measures_for(kind: str, *, drift: bool) -> tuple[str, ...]:
    """The comparators computed for a feature of `kind` ("numeric" or "categorical")."""
    if kind == "numeric":
        return (JSD,)
    return (LINF, JSD, NAD) if drift else (LINF, JSD)


def distances(kind: str, observed, baseline, *, drift: bool) -> dict[str, float]:
    """Every comparator for `kind` between the `observed` and `baseline` counts."""
    functions = {LINF: linf, JSD: jsd, NAD: nad}
    return {measure: functions[measure](observed, baseline) for measure in measures_for(kind, drift=drift)}
