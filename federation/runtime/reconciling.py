"""The agent's reconciler: from beliefs and local state to import views, and on to the feeds.

Holds what reconciling builds up: the import book (views and weight memories), the pools whose
inputs changed since the last step, this cluster's link state, the feeds and the heartbeat's
acknowledgements, and the ``Exported`` conditions last written.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable, Mapping

from federation.model.beliefs import Beliefs
from federation.model.conditions import Condition
from federation.model.exported import Acks, acks_for
from federation.model.failures import explain
from federation.model.freshness import LinkState, link_state
from federation.model.import_book import ImportBook
from federation.model.loads import LoadSample
from federation.model.pools import LocalPool, PoolKey, is_exported
from federation.model.rates import RATE_WINDOW
from federation.model.views import ImportView
from federation.model.weights import WeightPolicy
from federation.runtime.feeding import Feeds
from federation.runtime.ports import ExportStatusSink
from federation.settings import Settings

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self, settings: Settings, feeds: Feeds, export_status: ExportStatusSink | None
    ) -> None:
        self.settings = settings
        self.feeds = feeds
        self.export_status = export_status
        self.policy = WeightPolicy(
            lease=settings.lease,
            spill_threshold=settings.spill_threshold,
            slow_start=settings.slow_start,
            mode=settings.weights_mode,
            overflow_ratio=settings.overflow_ratio,
            # The rates span the rate window, or one sampling interval where that is longer.
            rate_window=max(RATE_WINDOW, settings.load_interval),
        )
        self.book = ImportBook(self.policy, settings.cluster)
        self.link = LinkState(False)
        self.acks: Acks | None = None  # what our heartbeat acknowledges to exporters
        self.acks_made = 0  # how often they changed (the ``Exported`` conditions follow)
        self.export_conditions: dict[PoolKey, Condition | None] = {}
        self._dirty: set[PoolKey] | None = None  # pools whose inputs changed; None: any
        self._acked = False  # the acknowledgements reflect the views every feed holds
        self._watermarks: dict[str, int] = {}  # of the beliefs the current views come from
        self.lease_lapses = 0  # heard peers' leases found run out at a step, over the agent's life
        self.stepped_at: float | None = None  # the clock the last step computed its weights at

    @property
    def views(self) -> dict[PoolKey, ImportView]:
        return self.book.views

    def is_stale(self, cluster: str) -> bool:
        """Whether the last step found ``cluster``'s lease run out."""
        return cluster in self.book.stale

    def mark_dirty(self, keys: Iterable[PoolKey] | None) -> None:
        """These pools' inputs changed (None: anything may have); the next step sees it."""
        if keys is None:
            self._dirty = None
        elif self._dirty is not None:
            self._dirty.update(keys)

    def step(
        self,
        beliefs: Beliefs,
        local_pools: Mapping[PoolKey, LocalPool],
        local_samples: Mapping[PoolKey, LoadSample],
        *,
        connected: bool,
        now: float,
    ) -> bool:
        """One weight step of the imports whose inputs or time moved; True if a view changed."""
        s = self.settings
        self.link = link_state(
            beliefs, own_cluster=s.cluster, members=s.members, connected=connected, now=now,
            lease=s.lease,
        )  # fmt: skip
        # A suspect link collects no garbage: peers are not gone just because we cannot hear them.
        grace = math.inf if self.link.suspect else s.grace
        # Only a pool held here and not exported is a ``local`` backend: the others' samples
        # reach imports as digests, like everyone else's.
        local_loads = {
            k: v.as_backend_load(now)
            for k, v in local_samples.items()
            if k in local_pools and not is_exported(local_pools[k])
        }
        dirty, self._dirty = self._dirty, set()
        self.stepped_at = now
        stale_before = self.book.stale
        changed = self.book.step(
            beliefs, local_pools, local_loads, self.link, now=now, grace=grace, dirty=dirty
        )
        # (Only peers once heard: one never heard, after a failed start-up read, lapsed nothing.)
        lapsed = self.book.stale - stale_before
        self.lease_lapses += sum(beliefs.last_heard(c) is not None for c in lapsed)
        if changed:
            self.feeds.changed()
            self._acked = False
            self._watermarks = dict(beliefs.watermarks)
        return changed

    async def feed(self) -> None:
        """Each feed that is due (new views, a retry, a resync) takes the views;
        acknowledgements follow only once every feed holds them, and say only what the views
        were computed from (the consumer may apply newer events while the feeds run)."""
        views = self.views
        if await self.feeds.feed(views) and not self._acked:
            acks = acks_for(
                self._watermarks, views, self.feeds.refused(), conflicted=self.book.conflicted
            )
            if acks != self.acks:  # an equal one changes nothing to tell anyone
                self.acks = acks
                self.acks_made += 1
            self._acked = True

    async def report_exports(self, conditions: dict[PoolKey, Condition | None]) -> bool:
        """Tell the pools' status what peers acknowledged; only when something changed.
        False when that failed (the caller retries on its next cycle)."""
        if self.export_status is None or conditions == self.export_conditions:
            return True
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                await self.export_status.apply_export_status(conditions)
        except Exception as exc:  # retried on the next cycle: the remembered set stays old
            log.warning("agent %s: export status failed: %s", self.settings.cluster, explain(exc))
            return False
        self.export_conditions = conditions
        return True
