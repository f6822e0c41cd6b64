"""One trace spans the exporting cluster's publish and the importing cluster's apply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from federation.kit.nats_servers import Supercluster
from federation.kit.sim.demo import DemoOptions
from tests.conftest import running_demo, wait_for

pytestmark = pytest.mark.e2e


def _spans(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _cross_cluster_trace(path: Path) -> tuple[dict, dict, dict] | None:
    """(publish in us-east, process in eu-west, apply in eu-west) linked parent to child."""
    spans = _spans(path)
    by_id = {s["span_id"]: s for s in spans}
    for apply in spans:
        if (
            not apply["name"].startswith("apply ")
            or apply["attributes"].get("federation.outcome") != "applied"
        ):
            continue
        process = by_id.get(apply["parent_id"] or "")
        if not process or process["kind"] != "CONSUMER":
            continue
        if process["attributes"].get("federation.cluster") != "eu-west":
            continue
        publish = by_id.get(process["parent_id"] or "")
        if (
            publish
            and publish["kind"] == "PRODUCER"
            and publish["attributes"].get("federation.cluster") == "us-east"
        ):
            return publish, process, apply
    return None


async def test_a_trace_spans_publish_in_one_cluster_and_apply_in_another(
    supercluster: Supercluster, clusterset: str, tmp_path: Path
) -> None:
    trace_file = tmp_path / "spans.jsonl"
    options = DemoOptions(clusters=2, pools=3, clusterset=clusterset, trace_file=trace_file)
    async with running_demo(options, supercluster) as demo:
        await demo.wait_converged(within=30)
        await wait_for(
            lambda: _cross_cluster_trace(trace_file) is not None,
            within=15,
            what="a publish→process→apply chain from us-east to eu-west",
        )
    found = _cross_cluster_trace(trace_file)
    assert found is not None
    publish, process, apply = found
    assert publish["trace_id"] == process["trace_id"] == apply["trace_id"]
    assert publish["attributes"]["messaging.system"] == "nats"
    assert (
        process["attributes"]["messaging.destination.name"]
        == publish["attributes"]["messaging.destination.name"]
    )
    assert publish["start_ns"] <= process["start_ns"] <= apply["start_ns"]


def test_the_sdk_is_installed_only_when_something_exports_its_spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SDK span nobody exports costs ~5x an API one on every event received: without a
    trace file or an OTLP endpoint there is no provider, and the agent makes no spans."""
    from opentelemetry import trace

    from federation.adapters import tracing

    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    installed: list[object] = []
    monkeypatch.setattr(trace, "set_tracer_provider", installed.append)
    assert tracing.setup_tracing("t") is None  # and the agent makes no spans
    assert installed == []
    exporting = tracing.setup_tracing("t", tmp_path / "spans.jsonl")
    assert installed == [exporting]
    exporting.shutdown()
