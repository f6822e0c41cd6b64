"""Envoy feed: a ``ClusterLoadAssignment`` per import, written atomically for file-based EDS.

Each file is a v3 ``DiscoveryResponse`` (what Envoy's ``path_config_source`` reads) holding one
``ClusterLoadAssignment``: one locality per backend with weight > 0 (Envoy rejects a locality
weight of 0, so a drained backend is simply absent), ``load_balancing_weight`` the backend's
weight, and as endpoints the backend's EPP (Endpoint mode) or its parent Gateways (Parent mode).
Files are written to a temporary name and renamed, which is the atomic move Envoy watches for.
Each file is parsed with Envoy's own API definitions (``xds-protos``), strictly, before it is
written: one that does not parse as Envoy's message (an unknown field, a wrong type) is a bug,
raised here. Envoy's further validation rules (protoc-gen-validate) are not run.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: F401 (registers the CLA type)
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryResponse
from google.protobuf import json_format

from federation.messages import EndpointAddress
from federation.model.pools import PoolKey
from federation.model.views import ImportView

CLA_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
Mode = Literal["endpoint", "parent"]


def _endpoint(a: EndpointAddress) -> dict[str, Any]:
    return {"endpoint": {"address": {"socket_address": {"address": a.host, "port_value": a.port}}}}


def cluster_name(key: PoolKey) -> str:
    return f"federation.{key.namespace}.{key.name}"


def load_assignment(view: ImportView, mode: Mode) -> dict[str, Any]:
    localities = []
    for backend, weight in sorted(view.weights.items()):
        if weight.weight <= 0:
            continue
        if mode == "endpoint":
            epp = view.epp(backend)
            addresses: tuple[EndpointAddress, ...] = (epp,) if epp else ()
        else:
            addresses = view.parent_addresses(backend)
        if not addresses:
            continue
        localities.append(
            {
                "locality": {"region": backend},
                "load_balancing_weight": weight.weight,
                "lb_endpoints": [_endpoint(a) for a in addresses],
            }
        )
    return {"@type": CLA_TYPE, "cluster_name": cluster_name(view.key), "endpoints": localities}


def discovery_response(view: ImportView, mode: Mode, version: str) -> dict[str, Any]:
    return {
        "version_info": version,
        "type_url": CLA_TYPE,
        "resources": [load_assignment(view, mode)],
    }


def validated(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` if Envoy's own definitions parse it strictly as a ``DiscoveryResponse``."""
    json_format.ParseDict(doc, DiscoveryResponse())  # raises ParseError on anything unknown
    return doc


def write_atomically(path: Path, content: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EnvoyEdsFeed:
    def __init__(self, directory: Path, mode: Mode = "endpoint") -> None:
        self.directory = directory
        self.mode = mode
        self._written: dict[PoolKey, bytes] = {}
        self._version = 0

    def path(self, key: PoolKey) -> Path:
        return self.directory / f"{cluster_name(key)}.json"

    async def apply(self, views: Mapping[PoolKey, ImportView]) -> None:
        # Small files, but fsync can stall on a busy disk: keep it off the event loop.
        await asyncio.to_thread(self._write, views)

    def _write(self, views: Mapping[PoolKey, ImportView]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for key, view in views.items():
            body = load_assignment(view, self.mode)
            content = json.dumps(body, sort_keys=True).encode()
            if self._written.get(key) == content:
                continue
            self._version += 1
            doc = validated(discovery_response(view, self.mode, str(self._version)))
            write_atomically(self.path(key), json.dumps(doc, indent=2).encode())
            self._written[key] = content
        for key in set(self._written) - set(views):
            self.path(key).unlink(missing_ok=True)  # the import is gone: so is its cluster
            del self._written[key]
