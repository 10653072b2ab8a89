"""A traffic split between version labels, decided by the client from a caller's key.

TF Serving serves whichever version a request's label names and leaves the
split of traffic between labels (an A/B test, a canary taking 10 %) to the
client, which is what its docs advise for A/B tests. Here a request goes to
the label its key hashes to: SHA-256 of the key, its first 8 bytes read as a
number in [0, 1), falls into one label's share of [0, 1), the labels taken in
sorted order. The same key (a user or session id) therefore always gets the
same label while the split stays the same, in any process, so one user sees
one version; over many keys each label's share tends to its weight. The
server's request log records the label each request asked for, so the counts
per label can be read back (tfbig.serving.request_log.requested_label).
"""

from __future__ import annotations

import bisect
import hashlib
import math
from typing import Mapping

from tfbig.serving.errors import ClientArgumentError

# How far the weights may sum from 1: room for decimal fractions such as 0.7 + 0.2 + 0.1.
TOLERANCE = 1e-6


def bucket(key) -> float:
    """The key's place in [0, 1): the first 8 bytes of its SHA-256, big-endian, over 2**64."""
    if isinstance(key, bool) or not isinstance(key, (str, bytes, int)):
        raise ClientArgumentError(f"a traffic split key must be a str, bytes or int (a user or session id), "
                                  f"got {type(key).__name__}")
    data = key if isinstance(key, bytes) else str(key).encode("utf-8")
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") / 2.0 ** 64


class TrafficSplit:
    """`weights`: label -> share of the traffic, each above 0, summing to 1."""

    def __init__(self, weights: Mapping[str, float]):
        if not isinstance(weights, Mapping) or not weights:
            raise ClientArgumentError(f"split must be a dict of label -> weight, e.g. "
                                      f"{{'stable': 0.9, 'canary': 0.1}}, got {weights!r}")
        for label, weight in weights.items():
            if not isinstance(label, str) or not label:
                raise ClientArgumentError(f"split label {label!r} is not a version label (a non-empty string)")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                    or not math.isfinite(weight) or weight <= 0:
                raise ClientArgumentError(f"split weight of {label!r} is {weight!r}; every weight must be a "
                                          f"number above 0 (leave a label out to send it nothing)")
        total = math.fsum(weights.values())
        if abs(total - 1.0) > TOLERANCE:
            raise ClientArgumentError(f"split weights sum to {total:g}; they must sum to 1, "
                                      f"e.g. {{'stable': 0.9, 'canary': 0.1}}")
        self.weights = dict(weights)
        self._labels = sorted(weights)
        # Upper bounds of each label's share but the last, which takes everything up to 1.
        running, self._bounds = 0.0, []
        for label in self._labels[:-1]:
            running += weights[label]
            self._bounds.append(running)

    def label_for(self, key) -> str:
        return self._labels[bisect.bisect_right(self._bounds, bucket(key))]
