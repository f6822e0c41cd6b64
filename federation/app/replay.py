"""``federation replay``: read the federation streams from a live NATS or from stores on disk,
filter them, and rebuild what one cluster computed at a given moment.

Sources: ``--nats URL`` reads the live streams of the cluster set; ``--data-dir DIR`` serves a
copy of every JetStream store under ``DIR`` (``DIR/<cluster>/jetstream``, as ``federation demo
--data-dir`` leaves them, or ``DIR`` itself) with an embedded nats-server and reads those. Events
are listed once each, from the outbound streams (``FED_OUT_*``: as published); ``--state-at`` uses
the chosen cluster's inbound stream (``FED_IN_*``: as received). History is what the streams keep
(``history_per_subject``, 8 events per subject by default).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.adapters.stream_reader import StreamReader
from federation.model.replay import Stored, decode_stored
from federation.settings import SettingsError

DEMO_MANIFEST = "federation-demo.json"  # written by `federation demo --data-dir`


class ReplayError(SettingsError):
    """Replay cannot run as asked; the CLI prints it and exits 2."""


@dataclass(frozen=True)
class Streams:
    clusterset: str
    outbound: dict[str, list[Stored]]  # cluster → its FED_OUT messages
    inbound: dict[str, list[Stored]]  # cluster → its FED_IN messages
    manifest: dict[str, Any]  # the demo's settings when read from a demo's data dir


def split_name(stream: str) -> tuple[str, str, str] | None:
    """``FED_OUT_<cs>_<cluster>`` → ("OUT", cs, cluster); names are DNS labels (no ``_``)."""
    parts = stream.split("_")
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
