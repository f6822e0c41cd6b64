"""Gateway feeds: a real HAProxy's request split, the Envoy EDS file, the HTTP endpoint."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from federation.adapters.agent_http import AgentHttp
from federation.adapters.envoy_eds import CLA_TYPE, EnvoyEdsFeed, cluster_name
from federation.adapters.haproxy import HAProxyError, HAProxyFeed, haproxy_weights
from federation.adapters.http_serving import TextServer
from federation.adapters.nats_servers import free_port
from federation.messages import EndpointAddress, ParentGateway
from federation.model.imports import DesiredImport
from federation.model.pools import PoolKey
from federation.model.views import WEIGHTS_ANNOTATION, ImportView, weights_annotation
from federation.model.weights import BackendWeight
from tests.conftest import wait_for
from tests.model.factories import export, pool

KEY = PoolKey("llm", "llama-3-70b")
BACKENDS = ("eu-west", "local", "us-east")


def view(weights: dict[str, int]) -> ImportView:
    exports = tuple(
        export(
            c,
            KEY.name,
            epp=EndpointAddress(host=f"10.0.0.{i}", port=9002),
            parents=(
                ParentGateway(
                    namespace="gw",
                    name="g",
                    addresses=(EndpointAddress(host=f"192.0.2.{i}", port=443),),
                ),
            ),
        )
        for i, c in enumerate(("eu-west", "us-east"), start=1)
    )
    desired = DesiredImport(
        key=KEY,
        exporting_clusters=("eu-west", "us-east"),
        has_local=True,
        exports=exports,
        local=pool(KEY.name, epp=EndpointAddress(host="10.9.9.9", port=9002)),
    )
    return ImportView(desired, {k: BackendWeight(w, "test") for k, w in weights.items()})


# --- HAProxy ----------------------------------------------------------------------------------

HAPROXY = shutil.which("haproxy")
needs_haproxy = pytest.mark.skipif(
    HAPROXY is None, reason="haproxy not installed (.ci/run installs Debian's haproxy)"
)


@pytest.fixture
async def haproxy(tmp_path: Path) -> AsyncIterator[tuple[HAProxyFeed, str]]:
    gateways = {name: TextServer(lambda _p, n=name: (200, n)) for name in BACKENDS}
    for g in gateways.values():
        await g.start()
    port = free_port()
    sock = tmp_path / "admin.sock"
    servers = "\n".join(f"  server {n} 127.0.0.1:{g.port} weight 1" for n, g in gateways.items())
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(f"""global
  stats socket {sock} mode 600 level admin
defaults
  mode http
  timeout connect 2s
  timeout client 5s
  timeout server 5s
frontend gateway
  bind 127.0.0.1:{port}
  default_backend llm_llama-3-70b
backend llm_llama-3-70b
  balance roundrobin
{servers}
""")
    proc = await asyncio.create_subprocess_exec(
        str(HAPROXY),
        "-f",
        str(cfg),
        "-db",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    feed = HAProxyFeed(str(sock))

    async def answers() -> bool:
        if proc.returncode is not None:
            pytest.fail(f"haproxy exited with {proc.returncode}")
        try:
            return "Name: HAProxy" in await feed.command("show info")
        except OSError:
            return False

    try:
        await wait_for(answers, within=10, what="haproxy runtime API")
        yield feed, f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        await proc.wait()
        for g in gateways.values():
            await g.stop()


async def _split(url: str, n: int) -> dict[str, float]:
    seen: Counter[str] = Counter()
    async with aiohttp.ClientSession() as http:
        for _ in range(n):
            async with http.get(url) as resp:
                seen[await resp.text()] += 1
    return {k: seen[k] / n for k in BACKENDS}


@needs_haproxy
async def test_haproxy_splits_requests_by_the_weights_and_follows_changes(
    haproxy: tuple[HAProxyFeed, str],
) -> None:
    feed, url = haproxy
    await feed.apply({KEY: view({"eu-west": 500_000, "local": 300_000, "us-east": 200_000})})
    split = await _split(url, 400)
    for name, share in {"eu-west": 0.5, "local": 0.3, "us-east": 0.2}.items():
        assert abs(split[name] - share) < 0.05, split
    await feed.apply({KEY: view({"eu-west": 0, "local": 250_000, "us-east": 750_000})})
    split = await _split(url, 400)
    assert split["eu-west"] == 0, split
    for name, share in {"local": 0.25, "us-east": 0.75}.items():
        assert abs(split[name] - share) < 0.05, split


@needs_haproxy
async def test_haproxy_refusals_raise_and_are_retried(haproxy: tuple[HAProxyFeed, str]) -> None:
    feed, _ = haproxy
    bad = ImportView(view({}).desired, {"no-such-server": BackendWeight(1_000_000, "x")})
    with pytest.raises(HAProxyError, match="No such server"):
        await feed.apply({KEY: bad})
    with pytest.raises(HAProxyError):  # not marked as sent: the next cycle tries again
        await feed.apply({KEY: bad})


def test_haproxy_weight_scaling_keeps_proportions_and_zeros() -> None:
    assert haproxy_weights({"a": 500_000, "b": 250_000, "c": 0}) == {"a": 256, "b": 128, "c": 0}
    assert haproxy_weights({"a": 999_999, "b": 1}) == {"a": 256, "b": 1}
    assert haproxy_weights({"a": 0}) == {"a": 0}


# --- Envoy EDS --------------------------------------------------------------------------------


async def test_eds_file_has_one_weighted_locality_per_serving_backend(tmp_path: Path) -> None:
    feed = EnvoyEdsFeed(tmp_path, mode="endpoint")
    await feed.apply({KEY: view({"eu-west": 600_000, "local": 400_000, "us-east": 0})})
    doc = json.loads(feed.path(KEY).read_text())
    assert doc["type_url"] == CLA_TYPE
    (cla,) = doc["resources"]
    assert cla["@type"] == CLA_TYPE
    assert cla["cluster_name"] == cluster_name(KEY)
    localities = {e["locality"]["region"]: e for e in cla["endpoints"]}
    assert set(localities) == {"eu-west", "local"}  # weight 0 is not allowed by Envoy: omitted
    assert localities["eu-west"]["load_balancing_weight"] == 600_000
    addr = localities["eu-west"]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert addr == {"address": "10.0.0.1", "port_value": 9002}
    local = localities["local"]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert local["address"] == "10.9.9.9"


async def test_eds_parent_mode_uses_gateway_addresses_and_rewrites_only_on_change(
    tmp_path: Path,
) -> None:
    feed = EnvoyEdsFeed(tmp_path, mode="parent")
    v = view({"eu-west": 500_000, "local": 0, "us-east": 500_000})
    await feed.apply({KEY: v})
    first = json.loads(feed.path(KEY).read_text())
    hosts = {
        e["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"]
        for e in first["resources"][0]["endpoints"]
    }
    assert hosts == {"192.0.2.1", "192.0.2.2"}
    await feed.apply({KEY: v})
    assert json.loads(feed.path(KEY).read_text())["version_info"] == first["version_info"]
    await feed.apply({})
    assert _files(tmp_path) == []  # the import is gone, and no temporary file is left behind


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- HTTP endpoint and annotation ---------------------------------------------------------------


async def test_weights_endpoint_serves_every_import_with_reasons() -> None:
    api = AgentHttp("ap-south")
    await api.start()
    try:
        await api.apply({KEY: view({"eu-west": 700_000, "local": 300_000, "us-east": 0})})
        async with aiohttp.ClientSession() as http, http.get(api.url) as resp:
            assert resp.status == 200
            doc = await resp.json()
    finally:
        await api.stop()
    imp = doc["imports"]["llm/llama-3-70b"]
    assert doc["cluster"] == "ap-south"
    assert imp["exportingClusters"] == ["eu-west", "us-east"]
    assert imp["backends"]["eu-west"] == {
        "weight": 700_000,
        "percent": 70.0,
        "reason": "test",
        "epp": "10.0.0.1:9002",
        "parents": ["192.0.2.1:443"],
    }


def test_weights_annotation_is_compact_json() -> None:
    got = weights_annotation(view({"us-east": 1, "eu-west": 999_999, "local": 0}))
    assert json.loads(got[WEIGHTS_ANNOTATION]) == {"eu-west": 999_999, "local": 0, "us-east": 1}
