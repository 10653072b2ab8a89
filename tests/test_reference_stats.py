"""The counting rules of reference statistics, which a monitor applies to traffic too.

The statistics of real exports (a digits CNN, a GPT) are tested in test_export.py, on its
exports; here the functions themselves, on real digits."""

import json

import numpy as np
import pytest

from tfbig.export.reference_stats import (
    OTHER, REFERENCE_STATS_FILE, categorical_feature, category_counts, histogram, numeric_edges,
    numeric_feature, read_reference_stats, top_categories, write_reference_stats,
)

from serving_models import digits_images


def test_histogram_counts_outside_the_edges_apart_and_closes_the_last_bin():
    edges = [0.0, 0.5, 1.0]
    assert histogram([-1, 0, 0.25, 0.5, 1.0, 1.5, np.nan, np.inf], edges).tolist() == [1, 2, 2, 1]


def test_a_constant_gets_a_bin_of_width_one_around_it():
    edges = numeric_edges(np.zeros(7), bins=4)
    assert edges == [-0.5, -0.25, 0.0, 0.25, 0.5]
    assert histogram([0.0] * 7 + [0.9], edges).tolist() == [0, 0, 0, 7, 0, 1]


def test_categories_beyond_the_known_ones_are_counted_as_other():
    assert category_counts(np.array([1, 1, 2, 7, 9]), ["1", "2", "3"]).tolist() == [2, 1, 0, 2]
    assert top_categories(np.array([5, 3, 3, 5, 1]), top_k=2) == ["3", "5"]
    feature = categorical_feature({"train": [1, 1, 2], "eval": [2, 4]})
    assert feature["categories"] == ["1", "2"]
    assert feature["splits"]["eval"] == {"count": 2, "counts": [0, 1, 1]}
    assert OTHER == "__other__"


def test_shifted_digits_fall_into_other_bins_than_the_reference():
    """What a monitor will do: count traffic into the reference's bins. Inverted digits
    move a pixel's mass across the histogram; held-out digits barely do."""
    images = digits_images(600).reshape(600, -1)
    train, held_out = images[:400], images[400:]
    pixel = 20
    reference = numeric_feature({"train": train[:, pixel]}, source="request", element=pixel)
    expected = np.asarray(reference["splits"]["train"]["histogram"]) / 400

    def distance(values):  # L-infinity over the bins: enough to tell the two apart here
        counts = histogram(values, reference["bin_edges"])
        return np.abs(counts / counts.sum() - expected).max()

    assert distance(held_out[:, pixel]) < 0.1 < distance(1.0 - held_out[:, pixel])
    summary = reference["splits"]["train"]
    assert sum(summary["histogram"]) == summary["count"] == 400
    assert summary["quantiles"][0] == pytest.approx(train[:, pixel].min(), abs=1e-6)


def test_file_round_trip_is_compact_json(tmp_path):
    stats = {"task": "classification", "features": {"x": numeric_feature({"train": [1.0, 2.0]})}}
    write_reference_stats(str(tmp_path), stats)
    text = (tmp_path / REFERENCE_STATS_FILE).read_text()
    assert text.count("\n") == 1 and json.loads(text)["format"] == "tfbig-reference-stats/1"
    assert read_reference_stats(str(tmp_path))["features"] == json.loads(json.dumps(stats["features"]))
    assert read_reference_stats(str(tmp_path / "nothing")) is None
