"""HAProxy servers for imports: what each backend should hold, and the commands to get there.

One HAProxy backend per import (its name from a rule, e.g. ``fed_{namespace}_{name}``), one
dynamic server per serving federation backend, named like the backend (``local`` or a cluster),
at the address Parent mode needs: the exporting cluster's parent Gateway from its export event,
or, for ``local``, this cluster's own Gateway in front of the local pool. Requests that a peer
forwards arrive at that Gateway listener, which serves its pool locally and never spills again.

Pure: :func:`wanted_servers` validates every name and address that came from the bus before it
may reach an HAProxy command (HAProxy's CLI splits on spaces and ';', so a hostile pool name or
address must never be interpolated), and :func:`plan` diffs the wanted servers against what
HAProxy reports and returns the commands, draining a server (weight 0) for ``drain`` seconds
before deleting it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from federation.messages import EndpointAddress
from federation.model.pools import PoolKey
from federation.model.views import ImportView

HAPROXY_MAX_WEIGHT: Final = 256
NAME: Final = re.compile(r"[A-Za-z0-9_.:-]{1,100}")  # HAProxy proxy and server names (fullmatch)


def haproxy_weights(weights: Mapping[str, int]) -> dict[str, int]:
    """Federation weights (0..1e6) on HAProxy's scale (0..256): the largest becomes 256, every
    positive weight at least 1, zero stays zero (the server takes nothing)."""
    top = max(weights.values(), default=0)
    if top <= 0:
        return dict.fromkeys(weights, 0)
    return {
        k: (max(1, round(w * HAPROXY_MAX_WEIGHT / top)) if w > 0 else 0) for k, w in weights.items()
    }


def backend_name(rule: str, key: PoolKey) -> str | None:
    """The HAProxy backend of an import, or None if the rule gives a name HAProxy refuses."""
    name = rule.format(namespace=key.namespace, name=key.name)
    return name if NAME.fullmatch(name) else None


def ip_literal(host: str) -> str | None:
    """``host`` as a canonical IP address, or None. Dynamic servers never resolve names, and an
    IPv6 scope (``%eth0``, which may hold any text) is refused too."""
    if "%" in host or not host.isprintable() or " " in host:
        return None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


@dataclass(frozen=True)
class Server:
    """A server as HAProxy holds it (or should)."""

    host: str
    port: int
    weight: int
    maintenance: bool = False

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Wanted:
    """One import's backend: its servers, and the federation backends left out with why."""

    backend: str
    servers: Mapping[str, Server]
    left_out: Mapping[str, str] = field(default_factory=dict)


def _gateway(view: ImportView, backend: str) -> EndpointAddress | str:
    addresses = view.parent_addresses(backend)
    if not addresses:
        return "no parent Gateway address (its export names none)"
    return addresses[0]


def wanted_servers(view: ImportView, rule: str) -> Wanted | str:
    """What HAProxy should hold for this import; a string says why it cannot hold anything."""
    backend = backend_name(rule, view.key)
    if backend is None:
        return f"backend name for {view.key} is not a valid HAProxy name"
    scaled = haproxy_weights(view.weight_by_backend)
    servers: dict[str, Server] = {}
    left_out: dict[str, str] = {}
    for name, weight in sorted(scaled.items()):
        if not NAME.fullmatch(name):
            left_out[name[:64]] = "not a valid HAProxy server name"
            continue
        gateway = _gateway(view, name)
        if isinstance(gateway, str):
            left_out[name] = gateway
            continue
        host = ip_literal(gateway.host)
        if host is None:
            left_out[name] = f"parent Gateway address {gateway.host[:64]!r} is not an IP address"
            continue
        if not 1 <= gateway.port <= 65535:
            left_out[name] = f"parent Gateway port {gateway.port} is out of range"
            continue
        servers[name] = Server(host, gateway.port, weight)
    return Wanted(backend, servers, left_out)


@dataclass
class Plan:
    commands: list[str]
    draining: dict[str, float]  # server -> since when it has been drained (weight 0)


def plan(
    backend: str,
    actual: Mapping[str, Server],
    wanted: Mapping[str, Server],
    draining: Mapping[str, float],
    *,
    now: float,
    drain: float,
) -> Plan:
    """The commands that turn ``actual`` into ``wanted`` for one backend.

    A wanted server with weight > 0 is added (then enabled), moved to its address, and weighted.
    A server that is not wanted, or wanted at weight 0 (a dead or drained backend), is set to
    weight 0 first and deleted once it has been at 0 for ``drain`` seconds, so requests in flight
    finish. Returns the commands and the servers now draining with since when.
    """
    commands: list[str] = []
    still: dict[str, float] = {}
    for name, want in sorted(wanted.items()):
        if want.weight <= 0:
            continue
        have = actual.get(name)
        ref = f"{backend}/{name}"
        if have is None:
            commands += [f"add server {ref} {want.address} weight {want.weight}"]
            commands += [f"enable server {ref}"]
            continue
        if (have.host, have.port) != (want.host, want.port):
            commands.append(f"set server {ref} addr {want.host} port {want.port}")
        if have.weight != want.weight:
            commands.append(f"set weight {ref} {want.weight}")
        if have.maintenance:
            commands.append(f"enable server {ref}")
    for name, have in sorted(actual.items()):
        serving = wanted.get(name)
        if serving is not None and serving.weight > 0:
            continue
        ref = f"{backend}/{name}"
        since = still[name] = draining.get(name, now)  # kept until HAProxy no longer has it
        if now - since >= drain:
            commands += [f"disable server {ref}", f"shutdown sessions server {ref}"]
            commands.append(f"del server {ref}")
        elif have.weight != 0:
            commands.append(f"set weight {ref} 0")
    return Plan(commands, still)
