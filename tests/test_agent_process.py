"""The production ``federation agent`` process: federates through its kube adapter, stops on
SIGTERM within a bound, and a restart withdraws nothing at its peers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment

from federation.kit.kube_emulator import EmulatedApiServer
from federation.kit.kube_kinds import new_emulator
from federation.kit.nats_servers import Supercluster, free_port
from federation.kit.sim.epp import CLASSIC, render_metrics
from federation.kit.sim.gateways import HAProxyGateway
from federation.kit.sim.kube_pools import EmulatedPools
from federation.kit.text_server import TextServer
from federation.model.loads import LoadSample
from federation.model.pools import EXPORT_VALUE, LocalPool, PoolKey
from federation.model.status_objects import DEFAULT_CONTROLLER
from tests.conftest import wait_for
from tests.test_xds_server import Client as XdsClient

pytestmark = pytest.mark.e2e

SHUTDOWN_BOUND = 10.0  # the agent's --shutdown-timeout default


@dataclass
class AgentProcess:
    cluster: str
    port: int
    proc: asyncio.subprocess.Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def start_agent(
    cluster: str,
    clusterset: str,
    members: str,
    nats_url: str,
    kube_url: str,
    log: Any,
    *extra: str,
    env: dict[str, str] | None = None,
) -> AgentProcess:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "federation", "agent",
        "--clusterset", clusterset, "--cluster", cluster, "--members", members,
        "--nats-url", nats_url, "--kube-url", kube_url,
        "--http-host", "127.0.0.1", "--http-port", str(port),
        "--insecure",  # these tests are not about security (test_security.py is)
        *extra,
        stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )  # fmt: skip
    return AgentProcess(cluster, port, proc)


async def ready(agent: AgentProcess) -> bool:
    with contextlib.suppress(aiohttp.ClientError, OSError):
        async with aiohttp.ClientSession() as http, http.get(f"{agent.url}/readyz") as resp:
            return resp.status == 200
    return False


@contextlib.asynccontextmanager
async def api_server() -> AsyncIterator[EmulatedApiServer]:
    server = EmulatedApiServer(new_emulator(("llm",)))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def pool(name: str) -> LocalPool:
    return LocalPool(
        namespace="llm", name=name, target_ports=(8000,), model=name, export=EXPORT_VALUE,
        metrics_url="http://127.0.0.1:9/metrics",  # nothing listens: the EPP reads unreachable
    )  # fmt: skip


def import_clusters(obj: dict[str, Any] | None) -> list[str] | None:
    for entry in ((obj or {}).get("status") or {}).get("controllers") or []:
        if entry.get("name") == DEFAULT_CONTROLLER:
            return [c["name"] for c in entry.get("exportingClusters") or []]
    return None


async def test_sigterm_and_kill_9_then_restart_withdraw_nothing(
    supercluster: Supercluster, clusterset: str, tmp_path: Any
) -> None:
    members = "us-east,eu-west"
    async with api_server() as east_api, api_server() as west_api:
        await EmulatedPools(east_api.emulator, 0).put(pool("llama"))
        logs = {c: (tmp_path / f"{c}.log").open("wb") for c in ("us-east", "eu-west")}
        agents: list[AgentProcess] = []
        try:
            for cluster, api in (("us-east", east_api), ("eu-west", west_api)):
                agents.append(
                    await start_agent(cluster, clusterset, members, supercluster.url(cluster),
                                      api.url, logs[cluster])
                )  # fmt: skip
            east = agents[0]

            def west_import() -> list[str] | None:
                obj = west_api.emulator.object_at("inferencepoolimports", "llm", "llama")
                return import_clusters(obj)

            def east_exported() -> bool:
                obj = east_api.emulator.object_at("inferencepools", "llm", "llama") or {}
                for entry in (obj.get("status") or {}).get("parents") or []:
                    for cond in entry.get("conditions") or []:
                        if cond["type"] == "Exported" and cond["status"] == "True":
                            return True
                return False

            async def restart_east() -> AgentProcess:
                return await start_agent(
                    "us-east", clusterset, members, supercluster.url("us-east"), east_api.url,
                    logs["us-east"],
                )  # fmt: skip

            await wait_for(lambda: west_import() == ["us-east"], within=60, what="the import")
            await wait_for(east_exported, within=30, what="Exported=True from the peer's ack")
            since = west_api.emulator.revision

            east.proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            code = await asyncio.wait_for(east.proc.wait(), timeout=SHUTDOWN_BOUND + 5)
            stopped_in = time.monotonic() - started
            assert code == 0
            assert stopped_in < SHUTDOWN_BOUND
            print(f"SIGTERM → exit in {stopped_in:.2f}s")

            agents[0] = east = await restart_east()
            await wait_for(lambda: ready(east), within=60, what="the restarted agent to be ready")
            await wait_for(east_exported, within=30, what="Exported=True after the restart")
            # kill -9 mid-stream (its load reports keep flowing), then a restart: same outcome.
            east.proc.send_signal(signal.SIGKILL)
            assert await asyncio.wait_for(east.proc.wait(), timeout=10) == -signal.SIGKILL
            agents[0] = east = await restart_east()
            await wait_for(lambda: ready(east), within=60, what="the agent to be ready after -9")
            await wait_for(east_exported, within=30, what="Exported=True after kill -9")
            # Through the stops and the restarts, eu-west's import never lost us-east.
            versions = [
                obj for rv, plural, _, obj in west_api.emulator.history
                if rv > since and plural == "inferencepoolimports"
            ]  # fmt: skip
            assert all(import_clusters(o) == ["us-east"] for o in versions), versions
            assert west_import() == ["us-east"]
        finally:
            for agent in agents:
                if agent.proc.returncode is None:
                    agent.proc.send_signal(signal.SIGTERM)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(agent.proc.wait(), timeout=SHUTDOWN_BOUND + 5)
                    if agent.proc.returncode is None:
                        agent.proc.kill()
                        await agent.proc.wait()
            for f in logs.values():
                f.close()


async def federate_two_secure_agents(
    tmp_path: Any,
    sc: Supercluster,
    clusterset: str,
    flags: Callable[[str], Awaitable[list[str]]],
) -> None:
    """us-east exports, eu-west imports, each agent a process started with ``flags(cluster)``
    (no ``--insecure``); both stop on SIGTERM with exit 0 within the bound."""
    members = ["us-east", "eu-west"]
    agents: list[AgentProcess] = []
    logs = {c: (tmp_path / f"{c}.log").open("wb") for c in members}
    try:
        async with api_server() as east_api, api_server() as west_api:
            await EmulatedPools(east_api.emulator, 0).put(pool("llama"))
            for cluster, api in (("us-east", east_api), ("eu-west", west_api)):
                port = free_port()
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "federation", "agent",
                    "--clusterset", clusterset, "--cluster", cluster,
                    "--members", ",".join(members),
                    "--nats-url", sc.url(cluster), "--kube-url", api.url,
                    "--http-host", "127.0.0.1", "--http-port", str(port),
                    *(await flags(cluster)),
                    stdout=logs[cluster], stderr=logs[cluster],
                )  # fmt: skip
                agents.append(AgentProcess(cluster, port, proc))

            def imported() -> bool:
                obj = west_api.emulator.object_at("inferencepoolimports", "llm", "llama")
                return import_clusters(obj) == ["us-east"]

            await wait_for(imported, within=60, what="the import over the secure bus")
        for agent in agents:
            agent.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(agent.proc.wait(), timeout=SHUTDOWN_BOUND + 5) == 0
    finally:
        for agent in agents:
            if agent.proc.returncode is None:
                agent.proc.kill()
                await agent.proc.wait()
        for f in logs.values():
            f.close()


async def test_a_secure_agent_process_federates(tmp_path: Any) -> None:
    """Every security flag of `federation agent`, against servers that enforce them."""
    from federation.kit.sim.security import Security

    servers = ["us-east", "eu-west", "ap-south"]  # a meta group of two needs both for election
    security = Security.create("sec", servers, tmp_path / "security")
    sc = Supercluster(servers, tmp_path / "nats", security.server_config())
    await sc.start()

    async def flags(cluster: str) -> list[str]:
        password = tmp_path / f"{cluster}.password"
        password.write_text(security.passwords[cluster])
        cert, key = security.pki.clients[cluster]
        return [
            "--signing-key", str(security.keys[cluster]), "--trust-bundle", str(security.bundle),
            "--nats-user", cluster, "--nats-password-file", str(password),
            "--nats-ca", str(security.pki.ca), "--nats-cert", str(cert), "--nats-key", str(key),
        ]  # fmt: skip

    try:
        await federate_two_secure_agents(tmp_path, sc, "sec", flags)
    finally:
        sc.stop()


async def test_an_agent_process_federates_in_nats_operator_mode(tmp_path: Any) -> None:
    """`--nats-creds` against servers in operator mode: each agent logs in with a .creds file
    from `federation keygen --nats-creds`, and signed events federate as with any login."""
    from federation.kit.nats_operator import Operator
    from federation.kit.sim.security import Security

    servers = ["us-east", "eu-west", "ap-south"]
    operator = Operator()
    keys = Security.create("op", servers, tmp_path / "security")  # signing keys and the bundle
    signing = operator.signing_seed(tmp_path / "account.nk")
    sc = Supercluster(servers, tmp_path / "nats", operator.server_config())
    await sc.start()

    async def flags(cluster: str) -> list[str]:
        creds = tmp_path / f"{cluster}.creds"
        made = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "federation", "keygen", str(creds), "--nats-creds",
            "--clusterset", "op", "--cluster", cluster,
            "--account-signing-key", str(signing), "--account", operator.account_key,
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await made.wait() == 0
        return [
            "--signing-key", str(keys.keys[cluster]), "--trust-bundle", str(keys.bundle),
            "--nats-creds", str(creds),  # secure without --insecure: a key login
        ]  # fmt: skip

    try:
        await federate_two_secure_agents(tmp_path, sc, "op", flags)
    finally:
        sc.stop()


@pytest.mark.skipif(
    not shutil.which("haproxy"), reason="haproxy not installed (.ci/run installs it)"
)
async def test_the_agent_process_feeds_haproxy_and_envoy_from_its_flags(
    supercluster: Supercluster, clusterset: str, tmp_path: Path
) -> None:
    """As a user runs it: flags (and a FEDERATION_* variable) → a programmed HAProxy, EDS files."""
    members = "us-east,eu-west"
    east_gateway = TextServer(lambda _p: (200, "served by us-east"))
    await east_gateway.start()
    sample = LoadSample(observed_at=0, ready_pods=4, kv_cache_utilization=0.2, saturation=0.2)
    east_epp = TextServer(lambda _p: (200, render_metrics("llama", sample, CLASSIC)))
    await east_epp.start()
    gateway = HAProxyGateway(
        "eu-west", tmp_path / "haproxy", gateway_port=free_port(), entry_port=free_port(),
        local_pools=[], imports=[PoolKey("llm", "llama")], model_servers_port=1,
    )  # fmt: skip
    await gateway.start()
    eds = tmp_path / "eds"
    xds_port = free_port()
    async with api_server() as east_api, api_server() as west_api:
        exported = dataclasses.replace(pool("llama"), metrics_url=east_epp.url("/metrics"))
        await EmulatedPools(east_api.emulator, 0).put(exported, east_gateway.port)
        logs = {c: (tmp_path / f"{c}.log").open("wb") for c in ("us-east", "eu-west")}
        agents = [
            await start_agent("us-east", clusterset, members, supercluster.url("us-east"),
                              east_api.url, logs["us-east"]),
            await start_agent("eu-west", clusterset, members, supercluster.url("eu-west"),
                              west_api.url, logs["eu-west"], "--envoy-eds-dir", str(eds),
                              "--xds-port", str(xds_port),
                              env={"FEDERATION_HAPROXY_SOCKET": str(gateway.socket)}),
        ]  # fmt: skip
        try:
            url = f"{gateway.entry_url}/llm/llama/v1/completions"

            async def served_through_haproxy() -> bool:
                with contextlib.suppress(aiohttp.ClientError):
                    async with aiohttp.ClientSession() as http, http.get(url) as resp:
                        return await resp.text() == "served by us-east"
                return False

            await wait_for(
                served_through_haproxy, within=60, what="a request via eu-west's HAProxy"
            )

            def eds_endpoints() -> list[Any]:
                # The EDS feed runs after HAProxy's: its file may still hold the view before.
                with contextlib.suppress(OSError, ValueError):
                    doc = json.loads((eds / "federation.llm.llama.json").read_text())
                    (cla,) = doc["resources"]
                    return list(cla["endpoints"])
                return []

            await wait_for(
                lambda: bool(eds_endpoints()), within=30, what="the exporter in the EDS file"
            )
            (locality,) = eds_endpoints()
            address = locality["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
            assert address == {"address": "127.0.0.1", "port_value": east_gateway.port}
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{agents[1].url}/v1/status") as resp:
                    feeds = (await resp.json())["feeds"]
                async with http.get(f"{agents[1].url}/metrics") as resp:
                    metrics = await resp.text()
            # The same assignment over xDS, as an Envoy asks for it.
            async with grpc.aio.insecure_channel(f"127.0.0.1:{xds_port}") as channel:
                client = XdsClient(channel)
                client.send(resource_names=["federation.llm.llama"])
                served = await client.receive(within=10)
                await client.close()
            (packed,) = served.resources
            cla = ClusterLoadAssignment()
            assert packed.Unpack(cla)
            (served_locality,) = cla.endpoints
            assert served_locality.locality.region == "us-east"
            assert served_locality.lb_endpoints[0].endpoint.address.socket_address.port_value == (
                east_gateway.port
            )
            # Gateway API: the exporter's backend as a Service + EndpointSlice in eu-west.
            service = west_api.emulator.object_at("services", "llm", "llama-fed-us-east")
            slice_obj = west_api.emulator.object_at("endpointslices", "llm", "llama-fed-us-east")
            assert service is not None
            assert slice_obj is not None
            assert slice_obj["ports"][0]["port"] == east_gateway.port
            assert list(feeds) == [
                "http", "haproxy", "xds", "envoy-eds", "kubernetes", "gateway-api"
            ]  # fmt: skip
            assert all(f["healthy"] for f in feeds.values()), feeds
            assert 'federation_feed_healthy{feed="haproxy"} 1.0' in metrics
            assert "federation_insecure 1.0" in metrics  # it was told --insecure: it says so
        finally:
            for agent in agents:
                agent.proc.terminate()
                await agent.proc.wait()
            await gateway.stop()
            await east_gateway.stop()
            await east_epp.stop()
