"""observability/: alert rules that promtool accepts and that use metrics the agent exports."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest

from federation.kit.nats_servers import Supercluster, free_port
from federation.kit.sim.demo import DemoOptions
from tests.conftest import running_demo, wait_for

ROOT = Path(__file__).resolve().parent.parent / "observability"
PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (.ci/run installs prometheus)")
def test_promtool_accepts_the_alert_rules() -> None:
    result = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(ROOT / "prometheus" / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rules = (ROOT / "prometheus" / "alerts.yml").read_text()
    written = len(re.findall(r"^\s*- alert:", rules, re.MULTILINE))
    assert written >= 8
    assert f"{written} rules found" in result.stdout  # every rule written is one promtool read


def test_rules_only_use_metrics_the_agent_exports() -> None:
    from federation.adapters import metrics

    source = Path(metrics.__file__).read_text()
    exported = set(re.findall(r'"(federation_[a-z_]+)"', source))
    rules = (ROOT / "prometheus" / "alerts.yml").read_text()
    used = {
        re.sub(r"_(total|bucket|count|sum)$", "", m)
        for m in re.findall(r"\b(federation_[a-z_]+)", rules)
    }
    assert used, "no metric used"
    assert used <= exported, used - exported


DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
PROMETHEUS = shutil.which("prometheus")


def _exprs() -> list[str]:
    """Every PromQL query of the dashboards, template variables set to "All" (``.+``)."""
    exprs = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            exprs.extend(
                re.sub(r"\$(instance|peer|import)\b", ".+", t["expr"])
                for t in panel.get("targets", [])
                if "expr" in t
            )
    return exprs


def test_dashboards_use_provisioned_datasources_and_a_tempo_trace_search() -> None:
    import yaml

    provisioned = yaml.safe_load(
        (ROOT / "grafana" / "provisioning" / "datasources" / "federation.yml").read_text()
    )
    uids = {d["uid"] for d in provisioned["datasources"]}
    traces = []
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        for panel in doc["panels"]:
            assert panel["datasource"]["uid"] in uids, (path.name, panel["title"])
            if panel["type"] == "traces":
                traces.append(panel)
        for variable in doc["templating"]["list"]:
            assert variable["datasource"]["uid"] in uids
    (tempo,) = traces
    query = tempo["targets"][0]["query"]
    # The attributes the trace search filters on are the ones the agent's spans carry.
    assert "messaging.system" in query
    publishing = (ROOT.parent / "federation" / "runtime" / "publishing.py").read_text()
    assert '"messaging.system": "nats"' in publishing


def test_dashboards_exist_and_use_only_exported_metrics() -> None:
    from federation.adapters import metrics

    exported = set(re.findall(r'"(federation_[a-z_]+)"', Path(metrics.__file__).read_text()))
    exprs = _exprs()
    assert exprs
    for expr in exprs:
        used = {
            re.sub(r"_(total|bucket|count|sum)$", "", m)
            for m in re.findall(r"\b(federation_[a-z_]+)", expr)
        }
        assert used, expr
        assert used <= exported, (expr, used - exported)


@pytest.mark.e2e
@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (.ci/run installs it)")
async def test_a_real_prometheus_gets_data_for_every_dashboard_query(
    supercluster: Supercluster, clusterset: str, tmp_path: Path
) -> None:
    async with running_demo(
        DemoOptions(clusters=2, pools=3, clusterset=clusterset), supercluster
    ) as demo:
        targets = [s.api.base_url.removeprefix("http://") for s in demo.clusters.values()]
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: federation\n"
            f"    static_configs: [{{targets: {json.dumps(targets)}}}]\n"
        )
        proc = await asyncio.create_subprocess_exec(
            str(PROMETHEUS),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'db'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with aiohttp.ClientSession() as http:
                for expr in _exprs():

                    async def has_data(expr: str = expr) -> bool:
                        try:
                            async with http.get(
                                f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr}
                            ) as resp:
                                body = await resp.json()
                        except aiohttp.ClientError:
                            return False
                        return body.get("status") == "success" and bool(body["data"]["result"])

                    await wait_for(has_data, within=60, what=f"data for {expr}")
        finally:
            proc.terminate()
            await proc.wait()


def test_the_local_stack_files_fit_together() -> None:
    import yaml

    stack = ROOT / "stack"
    compose = yaml.safe_load((stack / "compose.yaml").read_text())
    assert {"grafana", "tempo", "prometheus", "otel-collector"} <= set(compose["services"])
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = (stack / volume.split(":")[0]).resolve()
            assert source.exists(), volume
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), "the stack listens on loopback only"
    collector = yaml.safe_load((stack / "otel-collector.yaml").read_text())
    assert collector["service"]["pipelines"]["traces"]["exporters"] == ["otlp/tempo"]
    provisioned = yaml.safe_load(
        (ROOT / "grafana" / "provisioning" / "datasources" / "federation.yml").read_text()
    )
    urls = {d["uid"]: d["url"] for d in provisioned["datasources"]}
    assert urls["tempo"] == "http://tempo:3200"
    assert yaml.safe_load((stack / "tempo.yaml").read_text())["server"]["http_listen_port"] == 3200
    dashboards = yaml.safe_load(
        (ROOT / "grafana" / "provisioning" / "dashboards" / "federation.yml").read_text()
    )
    path = dashboards["providers"][0]["options"]["path"]
    grafana_volumes = compose["services"]["grafana"]["volumes"]
    assert any(v.split(":")[1] == path for v in grafana_volumes)
