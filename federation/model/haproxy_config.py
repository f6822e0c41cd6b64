"""The haproxy.cfg snippet a user writes once: what ``federation haproxy-config`` prints.

One entry frontend for this cluster's clients, routing each imported pool (by path prefix
``/<namespace>/<pool>/``; adapt the rule to how your clients name models) to that import's
backend. Each backend starts empty: the agent adds, weights, drains and deletes its servers at
runtime (``adapters/haproxy.py``). HAProxy keeps no dynamic server across a restart; the agent
programs them again at its next resync.

No loops, by construction and by check: a backend's servers are the exporting clusters' parent
Gateways (and this cluster's own, for ``local``), listeners that serve their pool *locally* and
never spill. Every request a backend forwards carries ``X-Federation-Hop: <cluster>``; an entry
frontend refuses a request that already has one with 508 Loop Detected, so even a parent address
pointed by mistake at an entry frontend cannot bounce requests between clusters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from federation.messages import is_label, is_subdomain
from federation.model.haproxy_servers import backend_name
from federation.model.pools import PoolKey

HOP_HEADER: Final = "X-Federation-Hop"


def entry_frontend(bind: str, pools: Iterable[PoolKey], rule: str, *, name: str) -> list[str]:
    lines = [
        f"frontend {name}",
        f"  bind {bind}",
        f"  http-request return status 508 content-type text/plain "
        f'string "federation: request already crossed clusters" '
        f"if {{ req.hdr({HOP_HEADER.lower()}) -m found }}",
    ]
    for key in sorted(pools):
        backend = backend_name(rule, key)
        if backend is not None:
            lines.append(f"  use_backend {backend} if {{ path_beg /{key.namespace}/{key.name}/ }}")
    return lines


def import_backend(key: PoolKey, rule: str, cluster: str) -> list[str]:
    backend = backend_name(rule, key)
    if backend is None:
        raise ValueError(f"the backend rule {rule!r} gives no valid HAProxy name for {key}")
    return [
        f"backend {backend}",
        "  balance roundrobin  # weighted; dynamic servers need a dynamic algorithm",
        "  option redispatch  # a dead cluster's connection refused: try another server",
        "  retries 2",
        "  retry-on conn-failure empty-response 503",
        f"  http-request set-header {HOP_HEADER} {cluster}",
    ]


def snippet(
    pools: Iterable[PoolKey],
    *,
    cluster: str,
    rule: str = "fed_{namespace}_{name}",
    bind: str = "127.0.0.1:8080",
    frontend: str = "federation_entry",
) -> str:
    """haproxy.cfg lines (frontend + backends) for these imported pools."""
    keys = sorted(set(pools))
    lines = [
        "# federation: the agent programs these backends' servers (--haproxy-socket).",
        "# Needs `stats socket <path> mode 600 level admin` in the global section.",
        *entry_frontend(bind, keys, rule, name=frontend),
    ]
    for key in keys:
        lines += ["", *import_backend(key, rule, cluster)]
    return "\n".join(lines) + "\n"


def snippet_for(pools: Iterable[str], *, cluster: str, rule: str, bind: str) -> str:
    """The snippet for pools given as ``NAMESPACE/NAME``; a ValueError says what is wrong."""
    if not is_label(cluster):
        raise ValueError(f"cluster {cluster!r} must be a DNS label")
    keys = []
    for value in pools:
        namespace, sep, name = value.partition("/")
        if not sep or not is_label(namespace) or not is_subdomain(name):
            raise ValueError(f"--pool takes NAMESPACE/NAME, not {value!r}")
        keys.append(PoolKey(namespace, name))
    return snippet(keys, cluster=cluster, rule=rule, bind=bind)
