"""The xDS server with a real gRPC client speaking ADS the way Envoy does.

Request, response, ACK; a pushed change; a NACK that is not answered with the same version;
a stale nonce ignored; a reconnect that resumes with the current state; EDS-only streams;
mutual TLS (a client without a certificate is refused) and a certificate rotation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3.base_pb2 import Node
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse
from envoy.service.endpoint.v3 import eds_pb2_grpc
from google.rpc.status_pb2 import Status

from federation.adapters.envoy_eds import CLA_TYPE
from federation.adapters.xds_server import XdsServer
from federation.kit.pki import create_pki, issue, load_ca
from federation.model.pools import PoolKey
from federation.model.views import ImportView
from tests.model.factories import gateway_view

NODE = Node(id="gateway-1", cluster="gateways")
LLAMA, PHI = PoolKey("llm", "llama"), PoolKey("llm", "phi")


def view(key: PoolKey, weights: dict[str, int]) -> ImportView:
    return gateway_view(key, weights)


class Client:
    """One ADS stream, driven request by request as Envoy drives it.

    Responses are read by a task of their own: cancelling a grpc.aio read cancels the call.
    """

    def __init__(self, channel: grpc.aio.Channel, *, eds_only: bool = False) -> None:
        self.requests: asyncio.Queue[DiscoveryRequest | None] = asyncio.Queue()
        self.responses: asyncio.Queue[DiscoveryResponse | BaseException] = asyncio.Queue()
        stub: Any = (
            eds_pb2_grpc.EndpointDiscoveryServiceStub(channel)
            if eds_only
            else ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        )
        method = stub.StreamEndpoints if eds_only else stub.StreamAggregatedResources
        self.call = method(self._requests())
        self._reader = asyncio.create_task(self._read())

    async def _requests(self) -> AsyncIterator[DiscoveryRequest]:
        while (r := await self.requests.get()) is not None:
            yield r

    async def _read(self) -> None:
        try:
            async for response in self.call:
                self.responses.put_nowait(response)
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
            self.responses.put_nowait(exc)

    def send(self, **kw: Any) -> None:
        self.requests.put_nowait(DiscoveryRequest(node=NODE, type_url=CLA_TYPE, **kw))

    async def receive(self, within: float = 5.0) -> DiscoveryResponse:
        async with asyncio.timeout(within):
            got = await self.responses.get()
        if isinstance(got, BaseException):
            raise got
        return got

    async def nothing_within(self, seconds: float) -> bool:
        """True if no response comes within ``seconds`` (a bounded wait for an absence)."""
        try:
            async with asyncio.timeout(seconds):
                await self.responses.get()
        except TimeoutError:
            return True
        return False

    async def close(self) -> None:
        self.requests.put_nowait(None)
        self.call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


def weights_of(response: DiscoveryResponse) -> dict[str, dict[str, int]]:
    out = {}
    for packed in response.resources:
        cla = ClusterLoadAssignment()
        assert packed.Unpack(cla)
        out[cla.cluster_name] = {
            loc.locality.region: loc.load_balancing_weight.value for loc in cla.endpoints
        }
    return out


@contextlib.asynccontextmanager
async def serving(**kw: Any) -> AsyncIterator[XdsServer]:
    server = XdsServer("127.0.0.1", 0, **kw)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_request_response_ack_push_nack_and_reconnect() -> None:
    async with serving() as server:
        await server.apply({LLAMA: view(LLAMA, {"east": 600_000, "west": 400_000}),
                            PHI: view(PHI, {"east": 1_000_000})})  # fmt: skip
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            client = Client(channel)
            client.send()  # no names in the first request: every cluster (wildcard)
            first = await client.receive()
            assert first.type_url == CLA_TYPE
            assert weights_of(first) == {
                "federation.llm.llama": {"east": 600_000, "west": 400_000},
                "federation.llm.phi": {"east": 1_000_000},
            }
            client.send(version_info=first.version_info, response_nonce=first.nonce)  # ACK
            assert await client.nothing_within(0.3)  # an ACK is not answered
            assert server.counts["acks"] == 1

            await server.apply({LLAMA: view(LLAMA, {"east": 100_000, "west": 900_000}),
                                PHI: view(PHI, {"east": 1_000_000})})  # fmt: skip
            pushed = await client.receive()
            assert int(pushed.version_info) > int(first.version_info)
            assert pushed.nonce != first.nonce
            assert weights_of(pushed)["federation.llm.llama"] == {"east": 100_000, "west": 900_000}

            client.send(version_info=first.version_info, response_nonce="stale")
            client.send(  # NACK: Envoy keeps the version it had, says why
                version_info=first.version_info, response_nonce=pushed.nonce,
                error_detail=Status(code=3, message="bad endpoint"),
            )  # fmt: skip
            assert await client.nothing_within(0.3)  # the refused version is not sent again
            assert server.counts["nacks"] == 1
            assert server.counts["stale_requests"] == 1

            # Names change: only the asked-for cluster.
            client.send(version_info=first.version_info, response_nonce=pushed.nonce,
                        resource_names=["federation.llm.phi"])  # fmt: skip
            narrowed = await client.receive()
            assert list(weights_of(narrowed)) == ["federation.llm.phi"]
            await client.close()

            # A reconnect (the last version Envoy accepted, no nonce): the current state.
            again = Client(channel)
            again.send(version_info=first.version_info, resource_names=["federation.llm.llama"])
            resumed = await again.receive()
            assert resumed.version_info == pushed.version_info
            assert weights_of(resumed) == {
                "federation.llm.llama": {"east": 100_000, "west": 900_000}
            }
            await again.close()


async def test_eds_streams_and_removed_imports() -> None:
    async with serving() as server:
        await server.apply({LLAMA: view(LLAMA, {"east": 1_000_000})})
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            client = Client(channel, eds_only=True)
            names = ["federation.llm.llama"]  # Envoy repeats its names in every request
            client.send(resource_names=names)
            first = await client.receive()
            assert weights_of(first) == {"federation.llm.llama": {"east": 1_000_000}}
            client.send(version_info=first.version_info, response_nonce=first.nonce,
                        resource_names=names)  # fmt: skip
            await server.apply({PHI: view(PHI, {"east": 1})})
            # llama went: said as an empty assignment (Envoy keeps what a response leaves out).
            gone = await client.receive()
            assert weights_of(gone) == {"federation.llm.llama": {}}
            client.send(version_info=gone.version_info, response_nonce=gone.nonce,
                        resource_names=names)  # fmt: skip
            await server.apply({PHI: view(PHI, {"east": 2})})  # not subscribed: nothing said
            assert await client.nothing_within(0.3)
            # A request naming nothing, once names were given, unsubscribes from everything.
            client.send(version_info=gone.version_info, response_nonce=gone.nonce)
            assert weights_of(await client.receive()) == {}
            await client.close()


async def test_other_resource_types_are_not_answered() -> None:
    async with serving() as server, grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        client = Client(ch)
        client.requests.put_nowait(
            DiscoveryRequest(
                node=NODE, type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster"
            )
        )
        assert await client.nothing_within(0.3)
        assert server.counts["unserved_type_requests"] == 1
        await client.close()


async def test_mutual_tls_refuses_a_client_without_a_certificate_and_reloads(
    tmp_path: Path,
) -> None:
    pki = create_pki(tmp_path, ["gateway"])
    cert, key = pki.clients["gateway"]
    async with serving(cert=pki.server_cert, key=pki.server_key, client_ca=pki.ca) as server:
        await server.apply({LLAMA: view(LLAMA, {"east": 1_000_000})})
        target = f"localhost:{server.port}"
        ca = pki.ca.read_bytes()
        good = grpc.ssl_channel_credentials(ca, key.read_bytes(), cert.read_bytes())
        async with grpc.aio.secure_channel(target, good) as channel:
            client = Client(channel)
            client.send()
            assert weights_of(await client.receive()) == {
                "federation.llm.llama": {"east": 1_000_000}
            }
            await client.close()
        anonymous = grpc.ssl_channel_credentials(ca)
        async with grpc.aio.secure_channel(target, anonymous) as channel:
            client = Client(channel)
            client.send()
            with pytest.raises(grpc.aio.AioRpcError):
                await client.receive()
            await client.close()
        # A rotated server certificate is used from the next handshake on.
        ca_key, ca_cert = load_ca(tmp_path)
        (tmp_path / "rotated").mkdir()
        new_cert, new_key = issue(tmp_path / "rotated", "xds", ca_key, ca_cert, server=True)
        pki.server_cert.write_bytes(new_cert.read_bytes())
        pki.server_key.write_bytes(new_key.read_bytes())
        async with grpc.aio.secure_channel(target, good) as channel:
            client = Client(channel)
            client.send()
            assert weights_of(await client.receive())
            await client.close()
        assert server.counts["tls_reloads"] == 1
