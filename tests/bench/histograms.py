"""Prometheus histograms read from a /metrics scrape: the buckets of the series that match, the
difference between two scrapes, and a quantile computed as PromQL's histogram_quantile does.

Pure functions (no I/O), so the benchmarks' arithmetic is unit-tested without a cluster.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

# One cumulative histogram: upper bound ("le", +Inf included) -> count of observations <= it.
Buckets = dict[float, float]

_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _labels(text: str) -> dict[str, str]:
    return {name: value.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
            for name, value in _LABEL.findall(text)}


def histogram_buckets(scrape: str, metric: str, match: Mapping[str, str]) -> Buckets:
    """The `metric`_bucket series whose labels include every one in `match`, summed per bound.

    Series that differ in a label not matched (the API server's `rejected`, say) are added up: a
    cumulative bucket of their union is the sum of theirs, as long as they share the bounds.
    """
    prefix = metric + "_bucket{"
    buckets: Buckets = {}
    for line in scrape.splitlines():
        if not line.startswith(prefix):
            continue
        labels_text, _, value = line[len(prefix):].rpartition("} ")
        labels = _labels(labels_text)
        if any(labels.get(name) != wanted for name, wanted in match.items()) or "le" not in labels:
            continue
        bound = math.inf if labels["le"] == "+Inf" else float(labels["le"])
        # A sample may carry a timestamp after the value: the value is the first field.
        buckets[bound] = buckets.get(bound, 0.0) + float(value.split()[0])
    return dict(sorted(buckets.items()))


def series_sum(scrape: str, name: str, match: Mapping[str, str]) -> float:
    """The sum of the samples of `name` (a counter, or a histogram's _sum or _count) whose labels
    include every one in `match`."""
    prefix = name + "{"
    found = 0.0
    for line in scrape.splitlines():
        if line.startswith(prefix):
            labels_text, _, value = line[len(prefix):].rpartition("} ")
            labels = _labels(labels_text)
            if all(labels.get(label) == wanted for label, wanted in match.items()):
                found += float(value.split()[0])
    return found


def bucket_delta(before: Buckets, after: Buckets) -> Buckets:
    """What was observed between two scrapes: after - before per bound (a bound missing before, as
    for a series that appeared with its first observation, counts as 0 there)."""
    missing = set(before) - set(after)
    if missing:
        raise ValueError(f"bounds {sorted(missing)} vanished between the scrapes (was the process restarted?)")
    delta = {bound: count - before.get(bound, 0.0) for bound, count in after.items()}
    if any(count < 0 for count in delta.values()):
        raise ValueError("a bucket count went down between the scrapes (was the process restarted?)")
    return delta


def total(buckets: Buckets) -> float:
    """The number of observations: the +Inf bucket's count."""
    return buckets.get(math.inf, 0.0)


def histogram_quantile(q: float, buckets: Buckets) -> float:
    """The q-quantile as Prometheus' histogram_quantile computes it: find the bucket the rank q * total
    falls in and interpolate linearly between its lower and upper bound (the first bucket's lower
    bound is 0); a rank in the +Inf bucket answers the highest finite bound. NaN without observations.
    """
    if not 0 <= q <= 1:
        raise ValueError(f"quantile {q} is not within [0, 1]")
    if math.inf not in buckets:
        raise ValueError("a histogram needs its +Inf bucket")
    count = total(buckets)
    if count == 0:
        return math.nan
    rank = q * count
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in sorted(buckets.items()):
        if cumulative >= rank and cumulative > lower_count:
            if bound == math.inf:
                return lower_bound
            if lower_bound == 0.0 and bound <= 0:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (cumulative - lower_count)
        lower_bound, lower_count = bound, cumulative
    return lower_bound


def bucket_of(q: float, buckets: Buckets) -> tuple[float, float]:
    """The bounds (lower, upper) of the bucket the q-quantile falls in: the resolution of that figure."""
    count = total(buckets)
    rank = q * count
    lower = 0.0
    for bound, cumulative in sorted(buckets.items()):
        if count and cumulative >= rank and cumulative > 0:
            return lower, bound
        lower = bound
    return lower, math.inf
