"""Small statistics helpers: percentiles and rates, rounded for a readable JSON document."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (``fraction`` in 0..1)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, Any]:
    """p50/p95/p99/max (and mean) of latencies given in seconds, reported in milliseconds."""
    values = sorted(seconds)
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "p50_ms": ms(percentile(values, 0.50)),
        "p95_ms": ms(percentile(values, 0.95)),
        "p99_ms": ms(percentile(values, 0.99)),
        "max_ms": ms(values[-1]),
        "mean_ms": ms(sum(values) / len(values)),
    }


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def rate(count: int, seconds: float) -> float | None:
    """Events per second, or None when there is no interval to divide by."""
    if seconds <= 0:
        return None
    return round(count / seconds, 1)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    if math.isnan(numerator) or math.isnan(denominator):
        return None
    return round(numerator / denominator, 3)


def best_run(results: dict[str, Any], key: str) -> tuple[str, float] | None:
    """The label and throughput of the fastest phase under ``results[key]`` (None if none
    measured one)."""
    runs = {label: r.get("throughput_per_s") for label, r in results.get(key, {}).items()}
    measured = {label: rate for label, rate in runs.items() if rate}
    if not measured:
        return None
    label = max(measured, key=lambda k: measured[k])
    return label, measured[label]
