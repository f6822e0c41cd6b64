"""``federation replay``: read the federation streams from a live NATS or from stores on disk,
filter them, and rebuild what one cluster computed at a given moment.

Sources: ``--nats URL`` reads the live streams of the cluster set; ``--data-dir DIR`` serves a
copy of every JetStream store under ``DIR`` (``DIR/<cluster>/jetstream``, as ``federation demo
--data-dir`` leaves them, or ``DIR`` itself) with an embedded nats-server and reads those. Events
are listed once each, from the outbound streams (``FED_OUT_*``: as published); ``--state-at`` uses
the chosen cluster's inbound stream (``FED_IN_*``: its exports as received) and every member's
live events (heartbeats and loads, which peers hear on plain NATS) from the outbound streams, at
the times their servers stored them. History is what the streams keep (``history_per_subject``,
8 events per subject by default).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.adapters.stream_reader import StreamReader
from federation.messages import is_live_subject
from federation.model.pools import PoolKey
from federation.model.replay import (
    ReplayFilter,
    Stored,
    decode_stored,
    iso_ms,
    parse_time,
    row,
    select,
)
from federation.model.replay import state_at as rebuild
from federation.model.views import imports_document
from federation.model.weights import WeightPolicy
from federation.settings import WEIGHTS_MODES, Settings, SettingsError

DEMO_MANIFEST = "federation-demo.json"  # written by `federation demo --data-dir`


class ReplayError(SettingsError):
    """Replay cannot run as asked; the CLI prints it and exits 2."""


@dataclass(frozen=True)
class Streams:
    clusterset: str
    outbound: dict[str, list[Stored]]  # cluster → its FED_OUT messages
    inbound: dict[str, list[Stored]]  # cluster → its FED_IN messages
    manifest: dict[str, Any]  # the demo's settings when read from a demo's data dir


SHARED = "@"  # marks a shared inbound stream's key: "@<nats-cluster>" (never a cluster name)


def split_name(stream: str) -> tuple[str, str, str] | None:
    """``FED_OUT_<cs>_<cluster>`` → ("OUT", cs, cluster); names are DNS labels (no ``_``).
    A NATS cluster's shared inbound stream, ``FED_IN_<cs>_at_<nats-cluster>``, → ("IN", cs,
    "@<nats-cluster>")."""
    parts = stream.split("_")
    if len(parts) == 5 and parts[:2] == ["FED", "IN"] and parts[3] == "at":
        return "IN", parts[2], SHARED + parts[4]
    if len(parts) != 4 or parts[0] != "FED" or parts[1] not in ("OUT", "IN"):
        return None
    return parts[1], parts[2], parts[3]


async def _read_all(url: str, clusterset: str | None, into: dict[str, list[Stored]]) -> None:
    async with StreamReader(url) as reader:
        for stream in await reader.streams("FED_"):
            parsed = split_name(stream)
            if parsed is None or (clusterset and parsed[1] != clusterset):
                continue
            into[stream] = [
                decode_stored(m.stream, m.sequence, m.stored_at, m.subject, m.data)
                for m in await reader.read(stream)
            ]


def find_stores(data_dir: Path) -> tuple[list[Path], dict[str, Any]]:
    """The JetStream stores under ``data_dir`` and the demo's manifest, if it left one."""
    if not data_dir.is_dir():
        raise ReplayError(f"{data_dir} is not a directory")
    if (data_dir / "jetstream").is_dir():
        stores = [data_dir]
    else:
        stores = [d / "jetstream" for d in sorted(data_dir.iterdir())
                  if (d / "jetstream" / "jetstream").is_dir()]  # fmt: skip
    if not stores:
        raise ReplayError(f"no JetStream store under {data_dir}")
    manifest: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        manifest = json.loads((data_dir / DEMO_MANIFEST).read_text())
    return stores, manifest


StoreServer = Callable[[Path], contextlib.AbstractAsyncContextManager[str]]


async def load_streams(
    *,
    nats_url: str | None,
    stores: list[Path],
    manifest: dict[str, Any],
    clusterset: str | None,
    serve_store_copy: StoreServer | None = None,
) -> Streams:
    """Read every federation stream from ``nats_url`` or from copies of ``stores``, each served
    by ``serve_store_copy`` (an embedded nats-server: the kit's, given by the CLI)."""
    raw: dict[str, list[Stored]] = {}
    clusterset = clusterset or manifest.get("clusterset")
    if stores:
        if serve_store_copy is None:
            raise ReplayError("reading stores on disk needs an embedded nats-server")
        for store in stores:
            async with serve_store_copy(store) as url:
                await _read_all(url, clusterset, raw)
    elif nats_url is not None:
        await _read_all(nats_url, clusterset, raw)
    else:
        raise ReplayError("give --nats URL or --data-dir DIR")
    found = {p[1] for s in raw if (p := split_name(s))}
    if not found:
        raise ReplayError("no federation streams found")
    if clusterset is None:
        if len(found) > 1:
            raise ReplayError(f"several cluster sets found ({', '.join(sorted(found))}): "
                              "choose one with --clusterset")  # fmt: skip
        clusterset = found.pop()
    outbound: dict[str, list[Stored]] = {}
    inbound: dict[str, list[Stored]] = {}
    for stream, stored in raw.items():
        kind, cs, cluster = split_name(stream) or ("", "", "")
        if cs != clusterset:
            continue
        (outbound if kind == "OUT" else inbound)[cluster] = stored
    return Streams(clusterset, outbound, inbound, manifest)


class ReplayUsage(ReplayError):
    """The flags do not go together (the CLI shows its usage)."""


@dataclass(frozen=True, kw_only=True)
class ReplayRequest:
    nats_url: str | None = None
    data_dir: Path | None = None
    clusterset: str | None = None
    since: str | None = None
    until: str | None = None
    clusters: tuple[str, ...] = ()
    pools: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    state_at: str | None = None
    as_cluster: str | None = None
    lease: float | None = None  # default: the demo's manifest, else the production setting
    grace: float | None = None
    slow_start: float | None = None


def _window(r: ReplayRequest) -> tuple[ReplayFilter, float | None]:
    if (r.nats_url is None) == (r.data_dir is None):
        raise ReplayUsage("give exactly one of --nats URL and --data-dir DIR")
    if (r.state_at is None) != (r.as_cluster is None):
        raise ReplayUsage("--state-at and --as go together")
    if any(p.count("/") != 1 for p in r.pools):
        raise ReplayUsage("--pool takes NAMESPACE/NAME")
    try:
        window = ReplayFilter(
            since=parse_time(r.since) if r.since else None,
            until=parse_time(r.until) if r.until else None,
            clusters=frozenset(r.clusters),
            pools=frozenset(PoolKey(*p.split("/", 1)) for p in r.pools),
            types=frozenset(r.types),
        )
        return window, parse_time(r.state_at) if r.state_at else None
    except ValueError as exc:
        raise ReplayUsage(f"bad time: {exc}") from None


async def replay(r: ReplayRequest, serve_store_copy: StoreServer | None = None) -> tuple[str, Any]:
    """``("events", rows)``, or ``("state", document)`` with ``--state-at``."""
    window, at = _window(r)
    stores, manifest = find_stores(r.data_dir) if r.data_dir else ([], {})
    streams = await load_streams(
        nats_url=r.nats_url, stores=stores, manifest=manifest, clusterset=r.clusterset,
        serve_store_copy=serve_store_copy,
    )  # fmt: skip
    if at is None:
        picked = select((s for v in streams.outbound.values() for s in v), window)
        return "events", [row(s) for s in picked]
    assert r.as_cluster is not None
    inbound = streams.inbound.get(r.as_cluster)
    if inbound is None:
        # Agents sharing an inbound stream (--shared-inbound) read one that sources every
        # member's exports, as each cluster's own would: any of them holds what C received.
        shared = sorted(k for k in streams.inbound if k.startswith(SHARED))
        if not shared:
            raise ReplayError(f"no inbound stream of {r.as_cluster!r}")
        inbound = streams.inbound[shared[0]]
    m = streams.manifest
    clusters = {k for k in streams.inbound if not k.startswith(SHARED)} | set(streams.outbound)
    members = m.get("members") or sorted(clusters)
    defaults = Settings(clusterset="replay", cluster="replay", members=("replay",), nats_url="")
    mode = str(m.get("weights_mode", defaults.weights_mode))
    if mode not in WEIGHTS_MODES:
        raise ReplayError(f"the manifest's weights_mode {mode!r} is not one of {WEIGHTS_MODES}")
    overflow = m.get("overflow_ratio", defaults.overflow_ratio)
    if isinstance(overflow, bool) or not isinstance(overflow, int | float):
        raise ReplayError(f"the manifest's overflow_ratio {overflow!r} is not a number >= 0")
    if not 0 <= overflow < math.inf:
        raise ReplayError(f"the manifest's overflow_ratio {overflow!r} is not a number >= 0")
    policy = WeightPolicy(
        lease=r.lease or m.get("lease", defaults.lease),
        slow_start=r.slow_start or m.get("slow_start", defaults.slow_start),
        mode=mode,  # a demo run in a fixed mode replays in it
        overflow_ratio=float(overflow),
    )
    cs = streams.clusterset
    received = [s for s in inbound if not is_live_subject(cs, s.subject)]
    received += [s for v in streams.outbound.values() for s in v if is_live_subject(cs, s.subject)]
    views = rebuild(
        received, cluster=r.as_cluster, members=members, at=at,
        policy=policy, grace=r.grace or m.get("grace", defaults.grace),
    )  # fmt: skip
    return "state", {
        "clusterset": streams.clusterset,
        "cluster": r.as_cluster,
        "at": iso_ms(at),
        "imports": imports_document(views),
    }
