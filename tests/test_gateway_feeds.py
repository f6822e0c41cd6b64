"""Gateway feeds: the Envoy EDS file, the HTTP endpoint, the annotation (HAProxy: its own file)."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryResponse
from google.protobuf import json_format

from federation.adapters.agent_http import AgentHttp, WeightsBoard
from federation.adapters.envoy_eds import CLA_TYPE, EnvoyEdsFeed, cluster_name, validated
from federation.messages import EndpointAddress, ParentGateway
from federation.model.imports import DesiredImport
from federation.model.pools import PoolKey
from federation.model.views import WEIGHTS_ANNOTATION, ImportView, weights_annotation
from federation.model.weights import BackendWeight
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


async def test_every_eds_file_parses_strictly_as_envoys_discovery_response(
    tmp_path: Path,
) -> None:
    """Envoy's own definitions (xds-protos), no unknown field allowed: what Envoy would load."""
    # Parent mode: `local` has no Gateway address in this view, so it has no locality.
    for mode, expected in (
        ("endpoint", {"eu-west": 1, "local": 999_999}),
        ("parent", {"eu-west": 1}),
    ):
        feed = EnvoyEdsFeed(tmp_path / mode, mode=mode)  # type: ignore[arg-type]
        await feed.apply({KEY: view({"eu-west": 1, "local": 999_999, "us-east": 0})})
        response = DiscoveryResponse()
        json_format.Parse(feed.path(KEY).read_text(), response)  # strict by default
        (packed,) = response.resources
        cla = ClusterLoadAssignment()
        assert packed.Unpack(cla)
        weights = {e.locality.region: e.load_balancing_weight.value for e in cla.endpoints}
        assert weights == expected
    with pytest.raises(json_format.ParseError):
        validated({"version_info": "1", "type_url": CLA_TYPE, "resources": [], "extra": 1})


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- HTTP endpoint and annotation ---------------------------------------------------------------


async def test_weights_endpoint_serves_every_import_with_reasons() -> None:
    board = WeightsBoard("ap-south")
    api = AgentHttp(board)
    await api.start()
    try:
        await board.apply({KEY: view({"eu-west": 700_000, "local": 300_000, "us-east": 0})})
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
