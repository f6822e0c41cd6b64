"""Percentiles for benchmark samples (seconds), rounded for reading."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(samples, 0.50), 6),
        "p99": round(percentile(samples, 0.99), 6),
        "max": round(max(samples), 6) if samples else float("nan"),
        "n": len(samples),
    }
