"""The benchmarks' histogram arithmetic: buckets from a scrape, deltas, histogram_quantile."""

from __future__ import annotations

import math

import pytest

from tests.bench.histograms import bucket_delta, bucket_of, histogram_buckets, histogram_quantile, series_sum, total

METRIC = "apiserver_admission_webhook_admission_duration_seconds"


def series(name: str, operation: str, rejected: str, counts: tuple[int, int, int]) -> str:
    """Three bucket lines of one series, as the API server writes them."""
    labels = f'name="{name}",operation="{operation}",rejected="{rejected}",type="validating"'
    return "".join(f'{METRIC}_bucket{{{labels},le="{le}"}} {count}\n'
                   for le, count in zip(("0.005", "0.025", "+Inf"), counts, strict=True))


SCRAPE = (
    f"# HELP {METRIC} [STABLE] Admission webhook latency\n# TYPE {METRIC} histogram\n"
    + series("a.example", "CREATE", "false", (3, 8, 10))
    + series("a.example", "CREATE", "true", (1, 2, 2))
    + series("a.example", "UPDATE", "false", (100, 100, 100))
    + series('b.example,x=\\"y\\"', "CREATE", "false", (50, 50, 50))
    + f'{METRIC}_count{{name="a.example",operation="CREATE",rejected="false",type="validating"}} 10\n'
    + f'{METRIC}_sum{{name="a.example",operation="CREATE",rejected="false",type="validating"}} 0.1\n'
)


def test_buckets_of_the_matching_series_are_summed_per_bound() -> None:
    buckets = histogram_buckets(SCRAPE, METRIC, {"name": "a.example", "operation": "CREATE"})
    assert buckets == {0.005: 4, 0.025: 10, math.inf: 12}
    assert total(buckets) == 12


def test_a_quoted_comma_or_quote_in_a_label_value_does_not_split_it() -> None:
    assert histogram_buckets(SCRAPE, METRIC, {"name": 'b.example,x="y"'}) == {0.005: 50, 0.025: 50, math.inf: 50}
    assert histogram_buckets(SCRAPE, METRIC, {"name": "b.example"}) == {}


def test_the_count_and_sum_lines_and_other_metrics_are_not_buckets() -> None:
    assert histogram_buckets(SCRAPE, "apiserver_admission_webhook", {}) == {}
    assert histogram_buckets(SCRAPE + 'other_bucket{le="1"} 5\n', "other", {}) == {1.0: 5}


def test_delta_subtracts_the_earlier_scrape_and_counts_a_new_series_from_zero() -> None:
    assert bucket_delta({0.005: 4, math.inf: 12}, {0.005: 10, 0.025: 3, math.inf: 20}) == {
        0.005: 6, 0.025: 3, math.inf: 8}


def test_delta_refuses_counts_that_went_down() -> None:
    with pytest.raises(ValueError, match="went down"):
        bucket_delta({0.005: 4, math.inf: 12}, {0.005: 3, math.inf: 12})
    with pytest.raises(ValueError, match="vanished"):
        bucket_delta({0.005: 4, math.inf: 12}, {math.inf: 12})


def test_quantile_interpolates_linearly_inside_the_bucket() -> None:
    buckets = {0.005: 40.0, 0.025: 90.0, 0.1: 100.0, math.inf: 100.0}
    # rank 50 is 10 of the 50 observations into (0.005, 0.025]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.005 + 0.020 * 10 / 50)
    # rank 99 is 9 of the 10 into (0.025, 0.1]
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.025 + 0.075 * 9 / 10)
    # the first bucket's lower bound is 0
    assert histogram_quantile(0.2, buckets) == pytest.approx(0.005 * 20 / 40)
    assert bucket_of(0.99, buckets) == (0.025, 0.1)
    assert bucket_of(0.2, buckets) == (0.0, 0.005)


def test_a_rank_on_a_bucket_boundary_answers_that_bound() -> None:
    assert histogram_quantile(0.4, {0.005: 40.0, 0.025: 90.0, math.inf: 100.0}) == pytest.approx(0.005)


def test_a_rank_in_the_inf_bucket_answers_the_highest_finite_bound() -> None:
    buckets = {0.005: 10.0, 0.025: 90.0, math.inf: 100.0}
    assert histogram_quantile(0.99, buckets) == 0.025
    assert bucket_of(0.99, buckets) == (0.025, math.inf)


def test_empty_buckets_are_skipped_and_no_observations_is_nan() -> None:
    assert histogram_quantile(0.5, {0.001: 0.0, 0.005: 0.0, 0.01: 10.0, math.inf: 10.0}) == pytest.approx(0.0075)
    assert math.isnan(histogram_quantile(0.5, {0.005: 0.0, math.inf: 0.0}))
    with pytest.raises(ValueError):
        histogram_quantile(0.5, {0.005: 1.0})
    with pytest.raises(ValueError):
        histogram_quantile(1.5, {math.inf: 1.0})


def test_series_sum_adds_the_matching_samples_of_one_name_only() -> None:
    assert series_sum(SCRAPE, METRIC + "_count", {"name": "a.example"}) == 10
    assert series_sum(SCRAPE, METRIC + "_sum", {"operation": "CREATE"}) == pytest.approx(0.1)
    assert series_sum(SCRAPE, METRIC + "_sum", {"operation": "DELETE"}) == 0
