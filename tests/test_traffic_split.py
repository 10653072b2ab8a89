"""The client's traffic split by version label: proportions, stickiness, validation.
(Against a real server, with the labels read back from its request logs: test_request_log.py.)"""

import math

import pytest

from tfbig.serving import Client
from tfbig.serving.client.split import TrafficSplit, bucket
from tfbig.serving.errors import ClientArgumentError

KEYS = [f"user-{i}" for i in range(2000)]


@pytest.mark.parametrize("weights", [{"stable": 0.9, "canary": 0.1}, {"a": 0.5, "b": 0.3, "c": 0.2}])
def test_shares_over_many_keys_are_within_binomial_bounds(weights):
    split = TrafficSplit(weights)
    labels = [split.label_for(key) for key in KEYS]
    for label, weight in weights.items():
        sigma = math.sqrt(len(KEYS) * weight * (1 - weight))
        assert abs(labels.count(label) - len(KEYS) * weight) <= 5 * sigma, (label, labels.count(label))


def test_a_key_always_gets_the_same_label_whatever_the_dict_order():
    forward = TrafficSplit({"stable": 0.9, "canary": 0.1})
    backward = TrafficSplit({"canary": 0.1, "stable": 0.9})
    assert [forward.label_for(k) for k in KEYS] == [backward.label_for(k) for k in KEYS]
    assert [forward.label_for(k) for k in KEYS] == [forward.label_for(k) for k in KEYS]
    # Fixed by SHA-256, so the same in every process (and any language that hashes the same way).
    assert bucket("user-1") == int("c6c289e49e9c05b2", 16) / 2 ** 64  # sha256(b"user-1")[:8]
    assert bucket(7) == bucket("7") and bucket(b"7") == bucket("7")


def test_growing_the_canary_only_moves_keys_towards_it():
    small, large = TrafficSplit({"stable": 0.9, "canary": 0.1}), TrafficSplit({"stable": 0.8, "canary": 0.2})
    moved = [(small.label_for(k), large.label_for(k)) for k in KEYS]
    assert ("canary", "stable") not in moved and ("stable", "canary") in moved


@pytest.mark.parametrize("weights, problem", [
    ({}, "dict of label"),
    ([("stable", 1.0)], "dict of label"),
    ({"stable": 0.9, "canary": 0.2}, "sum to 1.1"),
    ({"stable": 1.0, "canary": 0.0}, "above 0"),
    ({"stable": 1.1, "canary": -0.1}, "above 0"),
    ({"stable": float("nan")}, "above 0"),
    ({"": 1.0}, "non-empty string"),
    ({"stable": "1"}, "above 0"),
])
def test_a_bad_split_is_refused_naming_what_is_wrong(weights, problem):
    with pytest.raises(ClientArgumentError, match=problem):
        Client("127.0.0.1:1", split=weights)


def test_requests_need_a_key_when_a_split_is_set_and_a_split_when_a_key_is_given():
    with Client("127.0.0.1:1", split={"stable": 0.9, "canary": 0.1}) as client:
        with pytest.raises(ClientArgumentError, match="pass key="):
            client.predict("m", {"x": [[1.0]]})
        with pytest.raises(ClientArgumentError, match="str, bytes or int"):
            client.predict("m", {"x": [[1.0]]}, key=1.5)
    with Client("127.0.0.1:1") as client, pytest.raises(ClientArgumentError, match="has none"):
        client.predict("m", {"x": [[1.0]]}, key="user-1")
