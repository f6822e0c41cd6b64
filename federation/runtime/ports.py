"""Ports: what the agent needs from the world, as Protocols that adapters and simulators fill."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from typing import Protocol, runtime_checkable

from federation.model.conditions import Condition
from federation.model.loads import LoadSample
from federation.model.pools import LocalPool, PoolKey
from federation.model.views import ImportView


class PoolSource(Protocol):
    """This cluster's InferencePools: yields the full set at start and after every change."""

    def watch(self) -> AsyncIterator[Mapping[PoolKey, LocalPool]]: ...


class LoadSource(Protocol):
    """Reads one pool's Endpoint Picker. Never raises for a bad EPP: reports it in the sample."""

    async def sample(self, pool: LocalPool) -> LoadSample: ...


class DemandSource(Protocol):
    """A gateway that counts what its clients ask of each imported pool (cumulative requests)."""

    async def offered(self, keys: Collection[PoolKey]) -> Mapping[PoolKey, float]: ...


class ImportSink(Protocol):
    """Receives the full set of import views whenever it changes (idempotent)."""

    async def apply(self, views: Mapping[PoolKey, ImportView]) -> None: ...


@runtime_checkable
class RefusingSink(Protocol):
    """A feed that can refuse imports (e.g. a missing namespace): those are not acknowledged."""

    @property
    def refused(self) -> Mapping[PoolKey, str]: ...


@runtime_checkable
class ExplainingSink(Protocol):
    """A feed that says what it left out and why (``federation status``, "feeds")."""

    def notes(self) -> Mapping[str, object]: ...


class ExportStatusSink(Protocol):
    """Receives every local pool's ``Exported`` condition (None: the pool has no entry)."""

    async def apply_export_status(self, conditions: Mapping[PoolKey, Condition | None]) -> None: ...


class Signer(Protocol):
    """Signs what this cluster publishes: headers to send with the payload."""

    def sign(self, subject: str, payload: bytes) -> dict[str, str]: ...


class Verifier(Protocol):
    """None when ``cluster`` signed exactly this subject and payload; else why not."""

    def verify(
        self, subject: str, payload: bytes, headers: Mapping[str, str], cluster: str
    ) -> str | None: ...


class Service(Protocol):
    """Something the agent runs alongside its own tasks (informers, for instance)."""

    async def run(self) -> None: ...


class Delivery(Protocol):
    subject: str
    data: bytes
    headers: Mapping[str, str]
    pending: int
    origin: tuple[str, int] | None  # (peer, sequence in its outbound stream), when sourced
    # When the local inbound stream stored it, on the local server's clock (None: unknown).
    # Only differences between two such times are used: never compared with another clock.
    stored_at: float | None

    async def ack(self) -> None: ...

    async def term(self) -> None: ...

    async def nak(self, delay: float) -> None: ...


class Bus(Protocol):
    @property
    def connected(self) -> bool: ...

    async def connect(self) -> None: ...

    async def ensure_streams(self) -> None: ...

    async def start_consuming(self) -> None: ...

    async def watch_live(self) -> None: ...

    async def live(self, wait: float = ...) -> Sequence[Delivery]: ...

    async def newest_live(
        self, members: Collection[str] | None = None, *, each_within: float | None = None
    ) -> Sequence[Delivery]: ...

    def live_unapplied(self) -> tuple[int, int]: ...  # live events (superseded, dropped) so far

    # Live events published without waiting whose stream ack was not taken within the request
    # timeout (refused, no stream, lost, or our loop too late: the stored copy, for replay,
    # may be missing), so far.
    live_acks_missed: int

    async def restart_stalled_sources(
        self,
        stalled_after: float,
        *,
        heard_live: Collection[str] = ...,
        quiet_after: float = ...,
    ) -> list[str]: ...

    async def repair_streams(self) -> list[str]: ...

    async def fetch(self, batch: int = ..., wait: float = ...) -> Sequence[Delivery]: ...

    async def publish(
        self,
        subject: str,
        payload: bytes,
        msg_id: str | None,
        headers: Mapping[str, str] | None = ...,
    ) -> bool:
        """Store an event in our outbound stream (live ones also reach peers' subscriptions);
        False when ``msg_id`` (de-duplication, None for none) was seen within the window."""
        ...

    async def close(self) -> None: ...
