"""What recomputing imports costs, in process: one ImportBook step over the ``shared`` shape.

100 clusters, 50 pools each exported by a third of them (33 backends per import), every import
stepped at each step (a step 0.5 s after the last; each backend's load moves every 10 s on
its own phase, as the scale benchmark's synthetic loads do): with the rates a production EPP
sample carries (arrivals, completions, capacity), so the rate plan runs as it does in an agent,
and without them, as for the scale benchmark's synthetic loads (no request counters) and
reports of agents older than the rate plan; and with one exporter per pool (lone imports, as
in the scale benchmark's ``own`` shape), kept as they were when only their load moved.
No servers: this isolates the per-import Python cost that each of the scale benchmark's agents
pays at every reconcile (BENCHMARKS.md, session 15).

    python -m federation.kit.bench.book_step
"""

from __future__ import annotations

import random
import time
import zlib

from federation.messages import EndpointAddress, ExportEvent, LoadDigest, PoolLoad
from federation.model.beliefs import Beliefs
from federation.model.freshness import LinkState
from federation.model.import_book import ImportBook
from federation.model.weights import WeightPolicy

CLUSTERS = 100
POOLS = 50
STEP = 0.5  # seconds between reconciles
MOVES_EVERY = 20  # steps between two moves of one backend's load (10 s)
STEPS = 20  # per round
ROUNDS = 6
GRACE = 30.0


class _Fleet:
    """The peers' exports and digests as one importer, ``c000``, takes them in."""

    def __init__(self, seed: int, rates: bool, exporters: int) -> None:
        rng = random.Random(seed)
        self.rates = rates
        self.clusters = [f"c{i:03d}" for i in range(CLUSTERS)]
        others = self.clusters[1:]  # (the importer exports none of them)
        self.pools = {f"shared-p{j}": rng.sample(others, exporters) for j in range(POOLS)}
        self.own = self.clusters[0]
        self.beliefs = Beliefs()
        self.sequence = 0
        for name, clusters in self.pools.items():
            for cluster in clusters:
                self.beliefs.apply(self._export(cluster, name), 0.0)

    def _export(self, cluster: str, name: str) -> ExportEvent:
        return ExportEvent(
            cluster=cluster, namespace="bench", name=name, generation=1, exported_at=1.0,
            published_at=0.0, target_ports=(8000,), epp=EndpointAddress(host="10.0.0.1", port=9002),
        )  # fmt: skip

    def digests(self, now: float, step: int) -> None:
        self.sequence += 1
        for cluster in self.clusters[1:]:
            entries = []
            for name, exporters in self.pools.items():
                if cluster not in exporters:
                    continue
                h = zlib.crc32(f"{cluster}/{name}".encode())
                level = 0.3 + 0.1 * ((h + (step + h % MOVES_EVERY) // MOVES_EVERY) % 3)
                rate = 10 * level if self.rates else None
                entry = PoolLoad(
                    namespace="bench", name=name, observed_at=now, ready_pods=4,
                    kv_cache_utilization=level, saturation=level, arrival_rate=rate,
                    completion_rate=rate, capacity_rate=12.0 if self.rates else None,
                )  # fmt: skip
                entries.append(entry)
            digest = LoadDigest(
                cluster=cluster, sequence=self.sequence, published_at=now, pools=tuple(entries)
            )
            self.beliefs.apply(digest, now)


def measure(
    seed: int = 1, *, rates: bool = True, exporters: int = CLUSTERS // 3
) -> dict[str, float]:
    """Microseconds per import stepped (recomputed, or kept as it was when lone): the best
    round's mean, and the median round's. Without ``rates`` the plan has nothing to plan with
    and the headroom rule weighs (reports of older agents; the scale benchmark's synthetic
    loads). With one exporter per pool (the scale benchmark's ``own`` shape) every import is
    lone: its load moving is checked, not recomputed (``ImportBook.kept_lone``)."""
    fleet = _Fleet(seed, rates, exporters)
    book = ImportBook(WeightPolicy(), fleet.own)
    link = LinkState(False)
    now, step = 0.0, 0
    fleet.digests(now, step)
    book.step(fleet.beliefs, {}, {}, link, now=now, grace=GRACE, dirty=None)
    rounds = []
    recomputed = weights_moved = 0
    for _ in range(ROUNDS):
        spent, before = 0.0, book.recomputed + book.kept_lone
        for _ in range(STEPS):
            now += STEP
            step += 1
            fleet.digests(now, step)
            held = {k: v.weight_by_backend for k, v in book.views.items()}
            began = time.perf_counter()
            book.step(fleet.beliefs, {}, {}, link, now=now, grace=GRACE, dirty=list(book.views))
            spent += time.perf_counter() - began
            # (Outside the timing) how many recomputations moved any weight at all.
            weights_moved += sum(v.weight_by_backend != held.get(k) for k, v in book.views.items())
        stepped = book.recomputed + book.kept_lone - before
        recomputed += stepped
        rounds.append(spent / stepped * 1e6)
    rounds.sort()
    return {
        "backends_per_import": exporters,
        "best_us_per_import": round(rounds[0], 1),
        "median_us_per_import": round(rounds[len(rounds) // 2], 1),
        "recomputed": recomputed,
        "weights_moved": weights_moved,
    }


def main() -> None:
    for exporters, rates in ((CLUSTERS // 3, True), (CLUSTERS // 3, False), (1, True)):
        f = measure(rates=rates, exporters=exporters)
        print(
            f"per import of {f['backends_per_import']} backend(s), "
            f"{'with' if rates else 'without'} rates, {ROUNDS} rounds of {STEPS} steps: best "
            f"{f['best_us_per_import']} us, median {f['median_us_per_import']} us; weights "
            f"moved in {f['weights_moved']} of {f['recomputed']} steps of an import"
        )


if __name__ == "__main__":
    main()
