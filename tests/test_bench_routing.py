"""The routing-quality simulation: deterministic, and sensitive to what it claims to measure."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from federation.kit.bench.routing import ClusterSpec, Scenario, run_routing, simulate

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "routing-scenario.json"


def small(**kw: object) -> Scenario:
    return dataclasses.replace(Scenario.default(), duration=120.0, warmup=10.0, **kw)  # type: ignore[arg-type]


def test_the_example_file_is_the_default_scenario() -> None:
    assert Scenario.from_json(EXAMPLE.read_text()) == Scenario.default()


def test_same_seed_same_outcome_and_same_arrivals_for_every_policy() -> None:
    a, b = simulate(small(), "capacity"), simulate(small(), "capacity")
    assert a.as_dict() == b.as_dict()
    counts = {simulate(small(), p).requests for p in ("local-only", "static", "capacity", "oracle")}
    assert len(counts) == 1


def test_policies_rank_as_expected_under_a_burst() -> None:
    result = run_routing(small())
    p = result["policies"]
    assert p["oracle"]["slo_attainment"] >= p["capacity"]["slo_attainment"]
    assert p["capacity"]["slo_attainment"] > p["static"]["slo_attainment"]
    assert p["capacity"]["slo_attainment"] > p["local-only"]["slo_attainment"]
    assert p["local-only"]["remote_share"] == 0.0


def test_without_overload_every_policy_but_static_meets_the_slo() -> None:
    calm = small(
        clusters=(ClusterSpec("a", slots=40, rate=5.0), ClusterSpec("b", slots=40, rate=5.0))
    )
    p = run_routing(calm)["policies"]
    assert p["local-only"]["slo_attainment"] == pytest.approx(1.0, abs=0.01)
    assert p["capacity"]["slo_attainment"] == pytest.approx(1.0, abs=0.01)
    assert p["static"]["remote_share"] > 0.4  # half the traffic pays the round trip for nothing


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        simulate(small(), "random")
