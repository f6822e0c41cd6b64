"""The routing-quality simulation: deterministic, and sensitive to what it claims to measure."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from federation.kit.bench.routing import ClusterSpec, Scenario, run_family, run_routing, simulate
from federation.kit.bench.routing_scenarios import (
    SHAPES,
    generated_scenario,
    named_scenarios,
    scenario_family,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples" / "routing"


def small(**kw: object) -> Scenario:
    return dataclasses.replace(Scenario.default(), duration=120.0, warmup=10.0, **kw)  # type: ignore[arg-type]


def test_the_example_files_are_the_named_scenarios() -> None:
    files = {p.stem: Scenario.from_json(p.read_text()) for p in EXAMPLES.glob("*.json")}
    assert files == {s.name: s for s in named_scenarios()}
    assert files["shipped"] == Scenario.default()


def test_the_family_is_seeded_and_covers_its_ranges() -> None:
    family = scenario_family(seed=11, size=16)
    assert family == scenario_family(seed=11, size=16)
    assert family != scenario_family(seed=12, size=16)
    generated = family[len(named_scenarios()) :]
    assert {s.name.split("-", 2)[2].rsplit("-", 2)[0] for s in generated} == set(SHAPES)
    assert {s.report_interval for s in generated} == {1.0, 5.0}
    for s in generated:
        assert 2 <= len(s.clusters) <= 6
        assert 0.05 <= s.propagation <= 0.5
        assert 0.02 <= s.rtt <= 0.2
        assert 0.5 <= s.service_time <= 3.0


def test_a_beyond_capacity_scenario_exceeds_the_whole_set() -> None:
    import random

    s = generated_scenario(SHAPES.index("beyond-capacity"), random.Random(3))
    burst = s.clusters[0].bursts[0]
    at = (burst.start + burst.end) / 2
    assert (
        sum(c.rate_at(at) for c in s.clusters) > sum(c.slots for c in s.clusters) / s.service_time
    )


def test_the_family_summary_reports_median_and_worst() -> None:
    family = [
        small(),
        small(name="calm", clusters=(ClusterSpec("a", 40, 5.0), ClusterSpec("b", 40, 5.0))),
    ]
    doc = run_family(family, demand_source="epp")
    assert [r["name"] for r in doc["results"]] == ["shipped", "calm"]
    assert set(doc["results"][0]["policies"]) == {"local-only", "static", "capacity", "oracle"}
    summary = doc["summary"]
    assert summary["scenarios"] == 2
    margins = [r["capacity_minus_better_baseline"] for r in doc["results"]]
    assert summary["worst_margin_over_better_baseline"] == min(margins)
    assert summary["targets"]["every_scenario_at_least_better_baseline"] == (min(margins) >= 0)


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
