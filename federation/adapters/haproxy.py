"""HAProxy feed: program a running HAProxy's dynamic servers through its runtime API.

The user's haproxy.cfg holds one (empty) backend per imported pool, named by the backend rule
(``federation haproxy-config`` prints them); the agent keeps each backend's servers equal to the
import's serving backends (``model.haproxy_servers``): it adds a server for a newly exporting
cluster, moves it when its Gateway address changes, sets weights, drains and then deletes a
withdrawn or dead one. HAProxy ≥ 2.5 (dynamic servers); Debian's 2.6 is what the tests run.

Every apply starts by reading what HAProxy holds (``show backend``, ``show servers state``), so a
restarted HAProxy — whose dynamic servers are gone — is programmed again in full at the next
apply (the agent resyncs every feed periodically). Each command goes on its own connection and
its answer is checked; a refused command is reported (the rest still run) and the apply raises,
so the agent retries with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from federation.model.haproxy_servers import Server, Wanted, backend_name, plan, wanted_servers
from federation.model.pools import LOCAL_BACKEND, PoolKey
from federation.model.views import ImportView
from federation.settings import tcp_address

log = logging.getLogger(__name__)

# What HAProxy 2.6 answers to commands that worked (anything else is a refusal).
_OK_ANSWERS = ("New server registered.", "Server deleted.", "IP changed", "port changed", "no need")
# A delete that must wait: connections still attached (retried at the next apply).
_NOT_YET = ("Server still has connections attached", "Server has still active", "still has")
MAX_ANSWER = 4 * 1024 * 1024


class HAProxyError(RuntimeError):
    pass


class HAProxyRuntime:
    """The runtime API over a UNIX socket or ``tcp://HOST:PORT``: one command per connection,
    under a timeout."""

    def __init__(self, address: Path | str, timeout: float = 2.0) -> None:
        self.address = str(address)
        self.tcp = tcp_address(self.address)
        self.timeout = timeout

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.tcp is not None:
            return await asyncio.open_connection(*self.tcp)
        return await asyncio.open_unix_connection(self.address)

    async def command(self, line: str) -> str:
        if ";" in line or any(not ch.isprintable() for ch in line):
            raise HAProxyError(f"refusing to send a command with a separator: {line[:80]!r}")
        async with asyncio.timeout(self.timeout):
            reader, writer = await self._connect()
            try:
                writer.write(line.encode() + b"\n")
                await writer.drain()
                # HAProxy answers in buffer-sized pieces and closes: read to the end.
                answer = b""
                while chunk := await reader.read(65536):
                    answer += chunk
                    if len(answer) > MAX_ANSWER:
                        raise HAProxyError(f"answer to {line[:40]!r} over {MAX_ANSWER} bytes")
                return answer.decode(errors="replace").strip()
            finally:
                writer.close()
                await writer.wait_closed()

    async def backends(self) -> set[str]:
        answer = await self.command("show backend")
        return {line.strip() for line in answer.splitlines() if line and not line.startswith("#")}

    async def servers(self) -> dict[str, dict[str, Server]]:
        """Every backend's servers as ``show servers state`` reports them."""
        return parse_servers_state(await self.command("show servers state"))

    async def requests_per_backend(self) -> dict[str, float]:
        """Each backend's request counter (``show stat``: ``req_tot``, else ``stot``)."""
        return parse_backend_requests(await self.command("show stat"))


def parse_backend_requests(answer: str) -> dict[str, float]:
    """The BACKEND rows of ``show stat``: requests each backend took since HAProxy started."""
    lines = answer.splitlines()
    if not lines or not lines[0].startswith("# "):
        return {}
    columns = lines[0][2:].split(",")
    out: dict[str, float] = {}
    for line in lines[1:]:
        row = dict(zip(columns, line.split(","), strict=False))
        if row.get("svname") != "BACKEND":
            continue
        value = row.get("req_tot") or row.get("stot") or ""
        try:
            out[row["pxname"]] = float(value)
        except (KeyError, ValueError):
            continue
    return out


def parse_servers_state(answer: str) -> dict[str, dict[str, Server]]:
    columns: list[str] = []
    out: dict[str, dict[str, Server]] = {}
    for line in answer.splitlines():
        if line.startswith("# "):
            columns = line[2:].split()
            continue
        fields = line.split()
        if not columns or len(fields) < len(columns):
            continue  # the format version line, blank lines
        row = dict(zip(columns, fields, strict=False))
        try:
            server = Server(
                host=row["srv_addr"],
                port=int(row["srv_port"]),
                weight=int(row["srv_uweight"]),
                maintenance=bool(int(row["srv_admin_state"]) & 0x01),
            )
        except (KeyError, ValueError):
            continue
        out.setdefault(row["be_name"], {})[row["srv_name"]] = server
    return out


@dataclass
class _Import:
    wanted: Wanted | str
    draining: dict[str, float] = field(default_factory=dict)


class HAProxyFeed:
    """An ImportSink that programs HAProxy's servers; ``notes()`` says what it left out."""

    def __init__(
        self,
        runtime: HAProxyRuntime,
        *,
        backend_rule: str = "fed_{namespace}_{name}",
        drain: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        members: Collection[str] | None = None,
    ) -> None:
        self.runtime = runtime
        # The servers this feed owns in a backend: ``local`` and members' names (None: any).
        # Anything else someone put there is left alone.
        self.owned = None if members is None else {LOCAL_BACKEND, *members}
        self.backend_rule = backend_rule
        self.drain = drain
        self.clock = clock
        self.commands_sent = 0
        self.refusals = 0
        self.deletes_pending = 0
        self._imports: dict[PoolKey, _Import] = {}
        self._missing: set[str] = set()  # backends haproxy.cfg does not have

    async def apply(self, views: Mapping[PoolKey, ImportView]) -> None:
        have_backends = await self.runtime.backends()
        actual = await self.runtime.servers()
        now = self.clock()
        imports: dict[PoolKey, _Import] = {}
        for key, view in sorted(views.items()):
            previous = self._imports.get(key)
            imports[key] = _Import(
                wanted_servers(view, self.backend_rule), previous.draining if previous else {}
            )
        # An import that went away leaves its backend to drain like a withdrawn cluster.
        for key, gone in self._imports.items():
            if key not in imports and isinstance(gone.wanted, Wanted):
                imports[key] = _Import(Wanted(gone.wanted.backend, {}), gone.draining)
        missing: set[str] = set()
        refused: list[str] = []
        done: list[PoolKey] = []
        self._imports = imports  # drain times survive an apply cut short (entries change in place)
        for key, entry in imports.items():
            if not isinstance(entry.wanted, Wanted):
                continue
            backend = entry.wanted.backend
            if backend not in have_backends:
                missing.add(backend)
                if key not in views:
                    done.append(key)  # gone from the config and from the imports: forget it
                continue
            held = {
                name: server
                for name, server in actual.get(backend, {}).items()
                if self.owned is None or name in self.owned
            }
            step = plan(
                backend, held, entry.wanted.servers, entry.draining, now=now, drain=self.drain,
            )  # fmt: skip
            entry.draining = step.draining
            refused += await self._send(step.commands)
            if key not in views and not step.draining and not held:
                done.append(key)  # nothing left to drain: forget it
        for key in done:
            del imports[key]
        if missing - self._missing:
            log.warning("HAProxy has no backend %s: add it to haproxy.cfg", sorted(missing))
        self._missing = missing
        if refused:
            raise HAProxyError(f"HAProxy refused {len(refused)} command(s): {refused[0][:300]}")

    async def _send(self, commands: list[str]) -> list[str]:
        refused = []
        for line in commands:
            answer = await self.runtime.command(line)
            self.commands_sent += 1
            if not answer or answer.startswith(_OK_ANSWERS):
                continue
            if line.startswith("del server") and any(n in answer for n in _NOT_YET):
                self.deletes_pending += 1  # connections still draining: next apply tries again
                continue
            self.refusals += 1
            refused.append(f"{line}: {answer}")
        return refused

    async def offered(self, keys: Collection[PoolKey]) -> dict[PoolKey, float]:
        """The gateway's demand counters: requests each pool's import backend has taken.

        Only this cluster's own clients reach an import backend (peers' spill arrives through the
        east-west entry point, which serves the pool locally), so its counter is the demand
        offered here, before any spill: what the rate plan needs (``demand_rate``).
        """
        counters = await self.runtime.requests_per_backend()
        out = {}
        for key in keys:
            backend = backend_name(self.backend_rule, key)
            if backend is not None and backend in counters:
                out[key] = counters[backend]
        return out

    def notes(self) -> dict[str, object]:
        """Per import, the backends left out and why; the backends missing from haproxy.cfg."""
        left: dict[str, object] = {}
        for key, entry in sorted(self._imports.items()):
            if isinstance(entry.wanted, str):
                left[str(key)] = entry.wanted
            elif entry.wanted.left_out:
                left[str(key)] = dict(entry.wanted.left_out)
        return {
            "left_out": left,
            "missing_backends": sorted(self._missing),
            "commands_sent": self.commands_sent,
            "refused": self.refusals,
            "deletes_pending": self.deletes_pending,
        }
