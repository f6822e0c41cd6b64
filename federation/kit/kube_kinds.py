"""The kinds an emulated cluster serves: exactly the resources the agent reads and writes."""

from __future__ import annotations

from federation.adapters.kube import (
    ENDPOINT_SLICES,
    GATEWAYS,
    HTTPROUTES,
    IMPORTS,
    POOLS,
    SERVICES,
    Resource,
)
from federation.kit.kube_emulator import ApiEmulator
from federation.kit.kube_objects import Kind


def kind_of(r: Resource, *, status: bool) -> Kind:
    return Kind(r.group, r.version, r.plural, r.kind, namespaced=True, status_subresource=status)


EMULATED = (
    kind_of(POOLS, status=True),
    kind_of(IMPORTS, status=True),
    kind_of(SERVICES, status=True),
    kind_of(HTTPROUTES, status=True),
    kind_of(GATEWAYS, status=True),
    kind_of(ENDPOINT_SLICES, status=False),
)
POOL_KIND, IMPORT_KIND, SERVICE_KIND, ROUTE_KIND, GATEWAY_KIND, SLICE_KIND = EMULATED


def new_emulator(namespaces: tuple[str, ...] = ("default",)) -> ApiEmulator:
    emulator = ApiEmulator()
    emulator.register(*EMULATED)
    for ns in namespaces:
        emulator.add_namespace(ns)
    return emulator
