"""xDS: an Aggregated Discovery Service (gRPC) serving each import's ClusterLoadAssignment (EDS).

An Envoy-based gateway points an EDS cluster at the agent (``eds_cluster_config.eds_config:
{ads: {}}`` with the agent as its ADS server) and gets, per import, the
``ClusterLoadAssignment`` of :mod:`federation.adapters.envoy_eds`: one locality per backend with
``load_balancing_weight`` its weight. Envoy's own API definitions (``xds-protos``) build every
message, so what is served is what Envoy parses.

The protocol is the state-of-the-world variant (``StreamAggregatedResources``, and the
EDS-only ``StreamEndpoints`` with the same rules):

- a request without a nonce (a new stream, or Envoy's first request for the type) is answered
  with the current state of the resources it names (none named, or ``*``: all of them),
  whatever ``version_info`` it carries: a reconnect resumes with the current state;
- a named resource the agent does not hold (an import that went away) is sent as an empty
  ``ClusterLoadAssignment``: Envoy keeps the old endpoints of an EDS resource a response only
  leaves out;
- every response has a new nonce and the state's version; a request whose ``response_nonce`` is
  not the last one sent on its stream is stale and ignored;
- a request with the last nonce is an ACK (its ``version_info`` is what Envoy now holds) or,
  with ``error_detail``, a NACK: logged and counted, and that version is not sent again; the
  next change is;
- a change of the subscribed names is answered at once; a change of the state is pushed to
  every stream whose resources changed;
- nothing is answered before the agent's first views (version 0): an empty answer to a
  reconnecting Envoy would wipe the endpoints it still has; the first views are pushed;
- other resource types (CDS, LDS, ...) are not served: such requests are counted and left
  unanswered, so an Envoy configured for them elsewhere keeps its own.

Listens on 127.0.0.1 unless told otherwise; with a certificate, key and client CA it requires
mutual TLS, and re-reads the files when they change (the next handshake uses the new ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse
from envoy.service.endpoint.v3 import eds_pb2_grpc
from google.protobuf import any_pb2, json_format

from federation.adapters.envoy_eds import CLA_TYPE, Mode, cluster_name, load_assignment
from federation.model.failures import explain
from federation.model.pools import PoolKey
from federation.model.views import ImportView

log = logging.getLogger(__name__)

_END: Final = object()  # the client closed its side of the stream
_CHANGED: Final = object()  # the served state has a new version


def assignment_proto(body: Mapping[str, Any]) -> ClusterLoadAssignment:
    """A ``load_assignment`` body as Envoy's message (strict: an unknown field is an error)."""
    cla = ClusterLoadAssignment()
    json_format.ParseDict({k: v for k, v in body.items() if k != "@type"}, cla)
    return cla


@dataclass(eq=False)  # identity: streams are kept in a set
class _Stream:
    """One client stream: what it subscribed to and what it was last sent."""

    peer: str
    queue: asyncio.Queue[object] = field(default_factory=asyncio.Queue)
    names: frozenset[str] | None = None  # None: nothing asked yet
    wildcard: bool = False  # the first request named nothing (or "*"): every resource
    change_queued: bool = False  # at most one _CHANGED waits in the queue
    nonce: str = ""  # of the last response sent
    version: str = ""  # of the last response sent
    sent: dict[str, bytes] = field(default_factory=dict)  # name → serialized, as last sent
    acked: str = ""  # the version the client last accepted
    nacked: str = ""  # the version it last refused


class XdsServer:
    """The served state (an ImportSink) and the gRPC server around it (a Service)."""

    def __init__(
        self,
        host: str,
        port: int,
        mode: Mode = "parent",
        *,
        cert: Path | None = None,
        key: Path | None = None,
        client_ca: Path | None = None,
    ) -> None:
        self.host, self.requested_port, self.mode = host, port, mode
        self.port = 0  # the bound port, once started
        self._tls = (cert, key, client_ca) if cert is not None else None
        self.version = 0
        self.resources: dict[str, ClusterLoadAssignment] = {}
        self._serialized: dict[str, bytes] = {}  # name → serialized; b"" below: not held
        self._streams: set[_Stream] = set()
        self._nonces = itertools.count(1)
        self.counts: Counter[str] = Counter()
        self._server: grpc.aio.Server | None = None
        self._tls_stamp: tuple[int, ...] = ()

    # -- the state (ImportSink) ---------------------------------------------------------------

    async def apply(self, views: Mapping[PoolKey, ImportView]) -> None:
        fresh = {cluster_name(k): assignment_proto(load_assignment(v, self.mode))
                 for k, v in views.items()}  # fmt: skip
        serialized = {n: cla.SerializeToString(deterministic=True) for n, cla in fresh.items()}
        if serialized == self._serialized and self.version > 0:
            return
        self.resources, self._serialized = fresh, serialized
        self.version += 1
        for stream in self._streams:
            if not stream.change_queued:  # a slow client gets the newest state, once
                stream.change_queued = True
                stream.queue.put_nowait(_CHANGED)

    def notes(self) -> dict[str, object]:
        return {
            "port": self.port,
            "version": self.version,
            "streams": len(self._streams),
            "counts": dict(sorted(self.counts.items())),
        }

    # -- the protocol -------------------------------------------------------------------------

    def _subset(self, stream: _Stream) -> dict[str, bytes]:
        """What the stream should hold: every resource (wildcard), or the named ones — a named
        one the agent does not have as an empty assignment, because Envoy keeps the last
        endpoints of an EDS resource a response merely leaves out."""
        if stream.wildcard:
            return dict(self._serialized)
        return {n: self._serialized.get(n, b"") for n in stream.names or ()}

    def _response(self, stream: _Stream) -> DiscoveryResponse:
        chosen = self._subset(stream)
        stream.sent = chosen
        stream.nonce = str(next(self._nonces))
        stream.version = str(self.version)
        resources = []
        for name in sorted(chosen):
            packed = any_pb2.Any()
            packed.Pack(self.resources.get(name) or ClusterLoadAssignment(cluster_name=name))
            resources.append(packed)
        self.counts["responses"] += 1
        return DiscoveryResponse(
            version_info=str(self.version), resources=resources, type_url=CLA_TYPE,
            nonce=stream.nonce,
        )  # fmt: skip

    def _on_request(self, stream: _Stream, request: DiscoveryRequest) -> bool:
        """Handle one request; True if it must be answered with the current state."""
        if request.type_url != CLA_TYPE:
            self.counts["unserved_type_requests"] += 1
            log.debug("xds: %s asked for %s, which is not served", stream.peer, request.type_url)
            return False
        names = frozenset(request.resource_names) - {"*"}
        if not request.response_nonce:  # the first request for this type on this stream
            stream.wildcard = not request.resource_names or "*" in request.resource_names
            stream.names = names
            self.counts["subscriptions"] += 1
            return True
        if request.response_nonce != stream.nonce:
            self.counts["stale_requests"] += 1
            return False
        if request.HasField("error_detail") and request.error_detail.code != 0:
            self.counts["nacks"] += 1
            stream.nacked = stream.version
            log.warning(
                "xds: %s refused version %s (it keeps %r): %s",
                stream.peer, stream.version, request.version_info, request.error_detail.message,
            )  # fmt: skip
        else:
            self.counts["acks"] += 1
            stream.acked = request.version_info
        # Later requests name the resources wanted now ("*" keeps the wildcard; none, once
        # something was named, unsubscribes from everything).
        wildcard = "*" in request.resource_names or (stream.wildcard and not names)
        if names != stream.names or wildcard != stream.wildcard:
            stream.names, stream.wildcard = names, wildcard
            return True
        return False

    async def _serve(
        self, requests: AsyncIterator[DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[DiscoveryResponse]:
        stream = _Stream(peer=context.peer())

        async def read() -> None:
            try:
                async for request in requests:
                    stream.queue.put_nowait(request)
            finally:
                stream.queue.put_nowait(_END)

        self._streams.add(stream)
        self.counts["streams_opened"] += 1
        reader = asyncio.create_task(read(), name=f"xds/read/{stream.peer}")
        try:
            while (item := await stream.queue.get()) is not _END:
                if item is _CHANGED:
                    stream.change_queued = False
                    due = stream.names is not None and self._subset(stream) != stream.sent
                else:
                    assert isinstance(item, DiscoveryRequest)
                    due = self._on_request(stream, item)
                if due and self.version > 0:  # before the agent's first views it knows nothing:
                    yield self._response(stream)  # an empty answer would wipe Envoy's endpoints
        finally:
            self._streams.discard(stream)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader  # its error, if any, is the client's going away

    # -- the gRPC server (Service) ------------------------------------------------------------

    async def start(self) -> None:
        server = grpc.aio.server()
        discovery = _Discovery(self)
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(discovery, server)
        eds_pb2_grpc.add_EndpointDiscoveryServiceServicer_to_server(discovery, server)
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        address = f"{host}:{self.requested_port}"
        if self._tls is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, self._credentials())
        if not self.port:
            raise OSError(f"xds: cannot listen on {address}")
        await server.start()
        self._server = server
        log.info("xds: serving ADS/EDS on %s:%d%s", self.host, self.port,
                 " (mutual TLS)" if self._tls else "")  # fmt: skip

    async def run(self) -> None:
        if self._server is None:
            await self.start()
        try:
            await asyncio.Future()  # until cancelled
        finally:
            await self.stop()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=1.0)
            self._server = None

    def _read_tls(self) -> grpc.ServerCertificateConfiguration:
        assert self._tls is not None
        cert, key, ca = self._tls
        assert key is not None
        assert ca is not None
        self._tls_stamp = tuple(p.stat().st_mtime_ns for p in (cert, key, ca) if p is not None)
        return grpc.ssl_server_certificate_configuration(
            [(key.read_bytes(), cert.read_bytes() if cert else b"")], ca.read_bytes()
        )

    def _credentials(self) -> grpc.ServerCredentials:
        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # Called by gRPC per handshake: a new configuration only when the files changed.
            assert self._tls is not None
            try:
                stamp = tuple(p.stat().st_mtime_ns for p in self._tls if p is not None)
                if stamp == self._tls_stamp:
                    return None
                config = self._read_tls()
            except OSError as exc:
                log.error("xds: TLS files unreadable, keeping the current ones: %s", explain(exc))
                return None
            self.counts["tls_reloads"] += 1
            log.info("xds: TLS certificates reloaded")
            return config

        return grpc.dynamic_ssl_server_credentials(
            self._read_tls(), fetch, require_client_authentication=True
        )


class _Discovery(
    ads_pb2_grpc.AggregatedDiscoveryServiceServicer,  # type: ignore[misc]
    eds_pb2_grpc.EndpointDiscoveryServiceServicer,  # type: ignore[misc]
):
    """Both services, one protocol: ADS and the EDS-only stream take the same requests."""

    def __init__(self, server: XdsServer) -> None:
        self.server = server

    async def _stream(self, requests: Any, context: Any) -> AsyncIterator[DiscoveryResponse]:
        async for response in self.server._serve(requests, context):
            yield response

    # Async generators themselves (the gRPC methods' names): that is how grpc.aio tells a
    # streaming handler.
    async def StreamAggregatedResources(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[DiscoveryResponse]:
        async for response in self._stream(request_iterator, context):
            yield response

    async def StreamEndpoints(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[DiscoveryResponse]:
        async for response in self._stream(request_iterator, context):
            yield response
