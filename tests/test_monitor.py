"""`tfbig monitor`'s parts on hand-computed values: TFDV's comparators, time windows, the thresholds
file, the request summary, and reading tensors out of logged records. The end-to-end runs on real
served traffic are in test_monitor_served.py."""

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from tensorflow_serving.apis import prediction_log_pb2

from tfbig.cli import main
from tfbig.monitor.compare import jsd, linf, nad
from tfbig.monitor.summary import RequestSummary
from tfbig.monitor.thresholds import Thresholds, ThresholdsError
from tfbig.monitor.timespec import TimeSpecError, parse_duration, parse_time
from tfbig.monitor.traffic import FeatureCounts, feature_values, record_tensors, reference_counts
from tfbig.serving.codec import to_tensor_proto
from tfbig.serving.request_log import RequestOutcome, outcome_bytes

# --- comparators --------------------------------------------------------------------------------


def test_l_infinity_is_the_largest_frequency_difference_each_side_normalized_alone():
    assert linf([1, 3], [3, 1]) == pytest.approx(0.5)  # |1/4 - 3/4|
    assert linf([10, 0, 0], [0, 0, 5]) == pytest.approx(1.0)
    assert linf([2, 2], [50, 50]) == 0.0  # sizes do not matter, shares do


def test_jensen_shannon_is_in_bits_and_capped_at_one():
    assert jsd([1, 0], [0, 1]) == pytest.approx(1.0)  # disjoint: 1 bit
    # P = (1/2, 1/2), Q = (1, 0), M = (3/4, 1/4):
    # KL(P||M) = 1/2 log2(2/3) + 1/2 log2(2) = 0.20752, KL(Q||M) = log2(4/3) = 0.41504
    assert jsd([1, 1], [1, 0]) == pytest.approx((0.5 * math.log2(2 / 3) + 0.5 + math.log2(4 / 3)) / 2)
    assert jsd([3, 3, 4], [3, 3, 4]) == 0.0
    p, q = np.array([5, 1, 0, 7, 2]), np.array([1, 4, 6, 2, 2])
    assert jsd(p, q) == pytest.approx(jensenshannon(p / p.sum(), q / q.sum(), base=2) ** 2)


def test_normalized_absolute_difference_is_over_both_totals():
    assert nad([10, 0], [5, 5]) == pytest.approx(5 / 20)
    assert nad([2, 2], [50, 50]) == pytest.approx(48 / 104)  # counts matter, unlike L-infinity


def test_an_empty_side_is_refused():
    with pytest.raises(ValueError, match="empty"):
        jsd([0, 0], [1, 1])


# --- times and windows --------------------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("1.5h", 5400), ("2d", 172800),
                                           ("1w", 604800), ("45", 45), (".5s", 0.5)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "1y", "h", "-1h", "", "1 hour"])
def test_bad_durations_say_what_a_duration_is(text):
    with pytest.raises(TimeSpecError, match="is not a duration: give a positive number with a unit"):
        parse_duration(text)


def test_times_iso_epoch_now_and_ago():
    now = 1_700_000_000.0
    assert parse_time("2023-11-14T22:13:20Z") == now
    assert parse_time("2023-11-14T22:13:20") == now  # no zone: UTC, as the log file names
    assert parse_time("2023-11-15T00:13:20+02:00") == now
    assert parse_time("1700000000") == now
    assert parse_time("now", now=now) == now
    assert parse_time("-2h", now=now) == now - 7200
    with pytest.raises(TimeSpecError, match="'yesterday' is not a time: give ISO 8601"):
        parse_time("yesterday")


# --- thresholds ---------------------------------------------------------------------------------


def test_default_thresholds_follow_the_kind():
    thresholds = Thresholds()
    assert thresholds.for_feature("inputs[3]", "numeric") == {"linf": None, "jsd": 0.3, "nad": None}
    assert thresholds.for_feature("predicted_class", "categorical") == {"linf": 0.3, "jsd": None, "nad": None}


def test_globs_match_brackets_literally_and_the_first_match_wins(tmp_path):
    path = tmp_path / "thresholds.yaml"
    path.write_text('"inputs[1?]": {jsd: 0.1}\n"inputs[*]": {jsd: 0.2}\n'
                    'predicted_class: {linf: 0.05, nad: 0.2}\nscore: {jsd: null}\n"nothing*": {jsd: 0.5}\n')
    thresholds = Thresholds.from_file(str(path))
    assert thresholds.for_feature("inputs[12]", "numeric")["jsd"] == 0.1
    assert thresholds.for_feature("inputs[3]", "numeric")["jsd"] == 0.2
    assert thresholds.for_feature("inputs3", "numeric")["jsd"] == 0.3  # brackets are not a class
    assert thresholds.for_feature("predicted_class", "categorical") == {"linf": 0.05, "jsd": None, "nad": 0.2}
    assert thresholds.for_feature("score", "numeric")["jsd"] is None
    assert thresholds.unmatched(["inputs[3]", "score", "predicted_class"]) == ["inputs[1?]", "nothing*"]


@pytest.mark.parametrize("text, message", [
    ("- a\n- b\n", "expected a mapping of feature"),
    ("score: 0.2\n", "score: expected distances such as"),
    ("score: {kl: 0.2}\n", "score: unknown distance kl; the distances are linf, jsd, nad"),
    ("score: {jsd: 1.5}\n", "score: jsd must be a number from 0 to 1"),
    ("score: {jsd: true}\n", "score: jsd must be a number from 0 to 1"),
    ("score: {jsd: [\n", "is not YAML or JSON"),
])
def test_a_bad_thresholds_file_is_one_line_naming_the_problem(tmp_path, text, message):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(ThresholdsError, match=message.replace("[", r"\[")):
        Thresholds.from_file(str(path))


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "logs").mkdir()
    (tmp_path / "t.yaml").write_text("score: {jsd: 2}\n")
    common = ["monitor", "--model-base-path", str(tmp_path), "--log-dir", str(tmp_path / "logs"),
              "--output", str(tmp_path / "out")]
    for extra, message in ((["--thresholds", str(tmp_path / "t.yaml")], "jsd must be a number from 0 to 1"),
                           (["--thresholds", str(tmp_path / "none.yaml")], "cannot read the thresholds file"),
                           (["--window", "soon"], "'soon' is not a duration"),
                           (["--since", "tomorrow"], "'tomorrow' is not a time"),
                           (["--since=-1h", "--until=-2h"], "--since ("),
                           (["--version", "3"], "no version 3 in"),
                           (["--min-count", "0"], "--min-count must be at least 1")):
        assert main(common + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("tfbig monitor: error: ") and message in err and "\n" not in err
    assert main(["monitor", "--model-base-path", str(tmp_path / "nope"), "--log-dir", str(tmp_path)]) == 2
    assert "no model base path" in capsys.readouterr().err


# --- records ------------------------------------------------------------------------------------


def logged(code=0, latency_micros=1000, label="", when=1_700_000_000.0) -> prediction_log_pb2.PredictionLog:
    """A record as the server writes it: a PredictionLog with tfbig's outcome appended."""
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.model_spec.name = "m"
    log.predict_log.request.model_spec.version_label = label
    log.log_metadata.model_spec.name = "m"
    data = log.SerializeToString() + outcome_bytes(RequestOutcome(
        code=code, latency_micros=latency_micros, entrypoint="GRPC", timestamp_micros=int(when * 1e6)))
    return prediction_log_pb2.PredictionLog.FromString(data)


def test_error_rate_and_latency_percentiles_from_records_with_failures():
    summary = RequestSummary()
    latencies = list(range(1000, 101000, 1000))  # 100 successes, 1..100 ms
    for i, micros in enumerate(latencies):
        summary.add(logged(latency_micros=micros, label="canary" if i % 10 == 0 else "stable"))
    for code in (3, 3, 14, 13):  # INVALID_ARGUMENT x2, UNAVAILABLE, INTERNAL: fast, and not timed
        summary.add(logged(code=code, latency_micros=5))
    result = summary.result()
    assert result["requests"] == 104 and result["errors"] == 4
    assert result["error_rate"] == pytest.approx(4 / 104)
    expected = np.asarray(latencies) / 1e3
    assert result["latency_ms"] == {f"p{p}": pytest.approx(np.percentile(expected, p)) for p in (50, 90, 99)}
    assert result["by_status"] == {"OK": 100, "INVALID_ARGUMENT": 2, "UNAVAILABLE": 1, "INTERNAL": 1}
    assert result["by_label"] == {"stable": 90, "canary": 10, "(none)": 4}
    assert RequestSummary().result()["error_rate"] is None


def test_tensors_of_predict_and_classify_records_map_onto_features():
    import tensorflow as tf

    images = np.arange(2 * 4, dtype=np.float32).reshape(2, 2, 2)
    log = prediction_log_pb2.PredictionLog()
    log.log_metadata.model_spec.signature_name = "serving_default"
    to_tensor_proto(images, out=log.predict_log.request.inputs["inputs"])
    to_tensor_proto(np.array([[0.0, 3.0, 1.0], [5.0, 0.0, 0.0]], np.float32),
                    out=log.predict_log.response.outputs["logits"])
    signature, request, response = record_tensors(log)
    assert signature == "serving_default"
    pixel = {"tensor": "inputs", "element": 3}
    np.testing.assert_array_equal(feature_values(pixel, request), [3.0, 7.0])  # inputs[:, 1, 1]
    assert feature_values({"tensor": "inputs", "element": 4}, request) is None
    assert feature_values({"tensor": "logits", "derived": "argmax"}, response).tolist() == [1, 0]
    top = feature_values({"tensor": "logits", "derived": "max_softmax"}, response)
    assert top[0] == pytest.approx(np.exp(3) / (1 + np.exp(3) + np.exp(1)))

    classify = prediction_log_pb2.PredictionLog()
    classify.log_metadata.model_spec.signature_name = "classify"
    for row in images.reshape(2, -1):
        example = tf.train.Example(features=tf.train.Features(feature={
            "inputs": tf.train.Feature(float_list=tf.train.FloatList(value=row))}))
        classify.classify_log.request.input.example_list.examples.add().CopyFrom(example)
    result = classify.classify_log.response.result.classifications.add()
    for k, score in enumerate((0.2, 0.8)):
        result.classes.add(label=str(k), score=score)
    signature, request, response = record_tensors(classify)
    np.testing.assert_array_equal(feature_values(pixel, request), [3.0, 7.0])  # the flat float_list
    assert feature_values({"tensor": "scores", "element": 1}, response) == pytest.approx([0.8])


def test_counts_use_the_reference_buckets_and_count_non_finite_values_apart():
    numeric = {"kind": "numeric", "bin_edges": [0.0, 0.5, 1.0]}
    counts = FeatureCounts(numeric)
    counts.add(np.array([-1.0, 0.1, 0.7, 1.0, 2.0]))
    counts.add(np.array([np.nan, 0.2]))
    assert counts.counts.tolist() == [1, 2, 2, 1, 1]  # below, [0, .5), [.5, 1], above, non-finite
    split = {"histogram": [0, 3, 1, 0], "non_finite": 2}
    assert reference_counts(numeric, split).tolist() == [0, 3, 1, 0, 2]
    categorical = FeatureCounts({"kind": "categorical", "categories": ["0", "1"]})
    categorical.add(np.array([0, 1, 1, 7]))
    assert categorical.counts.tolist() == [1, 2, 1, 0]
