"""The import book recomputes only what can have changed; it must equal a full recomputation."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.messages import PoolLoad
from federation.model.beliefs import Beliefs
from federation.model.freshness import LinkState, link_state
from federation.model.import_book import ImportBook
from federation.model.imports import desired_imports
from federation.model.pools import LocalPool, PoolKey
from federation.model.views import ImportView, import_views
from federation.model.weights import BackendLoad, WeightMemory, WeightPolicy
from tests.model.factories import beat, digest, entry, export, load, pool

OWN = "a"
MEMBERS = ("a", "b", "c")
NAMES = ("p", "q")
POLICY = WeightPolicy(lease=10.0, slow_start=6.0, settle=3.0)
GRACE = 25.0
RATES = (None, (6.0, 5.0, 8.0), (14.0, 8.0, 8.0))  # arrival, completion, capacity (req/s)


@dataclass
class Full:
    """The reference: every import recomputed at every step (what the agent did before)."""

    views: dict[PoolKey, ImportView] = field(default_factory=dict)
    memories: dict[PoolKey, WeightMemory] = field(default_factory=dict)

    def step(
        self,
        beliefs: Beliefs,
        local_pools: dict[PoolKey, LocalPool],
        local_loads: dict[PoolKey, BackendLoad],
        link: LinkState,
        now: float,
    ) -> None:
        grace = math.inf if link.suspect else GRACE
        desired = desired_imports(beliefs, local_pools, own_cluster=OWN, now=now, grace=grace)
        self.views, self.memories = import_views(
            desired, beliefs, local_loads, self.memories,
            own_cluster=OWN, now=now, policy=POLICY, link=link, previous=self.views,
        )  # fmt: skip


events = st.one_of(
    st.tuples(st.just("export"), st.sampled_from(MEMBERS), st.sampled_from(NAMES),
              st.sampled_from([(8000,), (9000,)]), st.booleans()),
    st.tuples(st.just("load"), st.sampled_from(MEMBERS), st.sampled_from(NAMES),
              st.integers(0, 6), st.floats(0, 1)),
    st.tuples(st.just("beat"), st.sampled_from(MEMBERS)),
    # A digest of some pools; few distinct loads, so many entries only renew what is held.
    # With rates (arrivals, completions, capacity) the rate plan runs, and here's kept share
    # over the rates' window with it.
    st.tuples(st.just("digest"), st.sampled_from(MEMBERS),
              st.lists(st.sampled_from(NAMES), unique=True), st.integers(1, 2),
              st.sampled_from([0.2, 0.9]), st.sampled_from(RATES)),
    st.tuples(st.just("local"), st.sampled_from(NAMES), st.integers(0, 4), st.floats(0, 1)),
    st.tuples(st.just("wait"), st.floats(0.05, 12.0)),
    st.tuples(st.just("connected"), st.booleans()),
)  # fmt: skip


# Lone imports renewed by digests (one exporter per pool: b exports p, c exports q), as at scale:
# parked on their exporter's digests, renewed, let lapse, or taken over by a per-pool report.
lone_events = st.one_of(
    st.tuples(st.just("export"), st.sampled_from([("b", "p"), ("c", "q")]),
              st.just((8000,)), st.booleans()).map(lambda t: ("export", *t[1], *t[2:])),
    # c exports p too, on other ports: excluded as a conflict, with a grace end of its own.
    st.tuples(st.just("export"), st.just("c"), st.just("p"), st.just((9000,)), st.booleans()),
    st.tuples(st.just("load"), st.sampled_from([("b", "p"), ("c", "q")]),
              st.integers(0, 6), st.floats(0, 1)).map(lambda t: ("load", *t[1], *t[2:])),
    st.tuples(st.just("beat"), st.sampled_from(MEMBERS)),
    *[st.tuples(st.just("digest"), st.sampled_from(["b", "c"]),
                st.lists(st.sampled_from(NAMES), unique=True, min_size=1),
                st.sampled_from([2, 2, 2, 1]), st.sampled_from([0.2, 0.2, 0.2, 0.995]),
                st.just(None))] * 3,  # (mostly the same load: digests that only renew it)
    *[st.tuples(st.just("wait"), st.sampled_from([0.5, 1.0, 2.0, 3.0, 4.5, 9.5, 10.0, 12.0]))] * 3,
    st.tuples(st.just("connected"), st.booleans()),
)  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(st.lists(events, min_size=1, max_size=60))
def test_the_book_equals_a_full_recomputation(steps: list[tuple]) -> None:  # type: ignore[type-arg]
    _check_against_full_recomputation(steps)


@settings(max_examples=400, deadline=None)
@given(st.lists(lone_events, min_size=1, max_size=80))
def test_the_book_with_lone_imports_on_digests_equals_a_full_recomputation(
    steps: list[tuple],  # type: ignore[type-arg]
) -> None:
    _check_against_full_recomputation(steps)


def _check_against_full_recomputation(steps: list[tuple]) -> None:  # type: ignore[type-arg]
    beliefs, book, full = Beliefs(), ImportBook(POLICY, OWN), Full()
    local_pools = {PoolKey("llm", "q"): pool("q")}  # q is also held here, not exported
    local_loads: dict[PoolKey, BackendLoad] = {}
    local_at: dict[PoolKey, tuple[float, int, float]] = {}
    now = 1000.0
    dirty: set[PoolKey] | None = None
    connected = True
    for seq, step in enumerate(steps, start=1):
        kind = step[0]
        if kind == "wait":
            now += step[1]
        elif kind == "connected":
            connected = step[1]
        elif kind == "export":
            _, cluster, name, ports, withdrawn = step
            beliefs.apply(export(cluster, name, generation=seq, published_at=now,
                                 exported_at=900.0 + seq, target_ports=ports,
                                 withdrawn=withdrawn), now)  # fmt: skip
            dirty = None if dirty is None else dirty | {PoolKey("llm", name)}
        elif kind == "load":
            _, cluster, name, pods, saturation = step
            beliefs.apply(load(cluster, name, sequence=seq, published_at=now, observed_at=now,
                               ready_pods=pods, saturation=saturation), now)  # fmt: skip
            dirty = None if dirty is None else dirty | {PoolKey("llm", name)}
        elif kind == "beat":
            beliefs.apply(beat(step[1], sequence=seq, published_at=now), now)
        elif kind == "digest":
            _, cluster, names, pods, saturation, rates = step
            arrival, completion, capacity = rates or (None, None, None)
            entries = tuple(entry(n, observed_at=now, ready_pods=pods, saturation=saturation,
                                  kv_cache_utilization=saturation, arrival_rate=arrival,
                                  completion_rate=completion, capacity_rate=capacity)
                            for n in names)  # fmt: skip
            beliefs.apply(digest(cluster, entries, sequence=seq, published_at=now), now)
            moved = {PoolKey(*k) for k in beliefs.digest_dirty(POLICY.lease * POLICY.full_trust)}
            dirty = None if dirty is None else dirty | moved
        else:
            _, name, pods, saturation = step
            local_at[PoolKey("llm", name)] = (now, pods, saturation)
            dirty = None if dirty is None else dirty | {PoolKey("llm", name)}
        local_loads = {
            k: BackendLoad(ready_pods=p, saturation=s, age=now - at)
            for k, (at, p, s) in local_at.items()
        }
        link = link_state(beliefs, own_cluster=OWN, members=MEMBERS, connected=connected, now=now,
                          lease=POLICY.lease)  # fmt: skip
        grace = math.inf if link.suspect else GRACE
        book.step(beliefs, local_pools, local_loads, link, now=now, grace=grace, dirty=dirty)
        full.step(beliefs, local_pools, local_loads, link, now)
        assert book.views == full.views, (step, now)
        assert book.conflicted == {k for k, v in book.views.items() if v.desired.excluded}
        dirty = set()


def test_a_renewal_that_restores_trust_moves_the_import() -> None:
    """A digest that repeats a report older than the lease only renews it, yet the import's
    weight must come back (found by review: it stayed at 0 until the grace time)."""
    beliefs, book, full = Beliefs(), ImportBook(POLICY, OWN), Full()
    key = PoolKey("llm", "p")
    beliefs.apply(export("b", "p", published_at=1000.0), 1000.0)
    entries = (entry("p", ready_pods=2, saturation=0.2),)
    beliefs.apply(digest("b", entries, sequence=2, published_at=1000.0), 1000.0)
    now, dirty = 1000.0, None
    for seq, now in enumerate((1000.0, 1012.0, 1013.0, 1014.0), start=3):
        if now == 1013.0:  # the peer's beat renews its lease; its load is past the lease
            beliefs.apply(beat("b", sequence=seq, published_at=now), now)
        if now == 1014.0:  # its digest repeats the old load
            beliefs.apply(digest("b", entries, sequence=seq, published_at=now), now)
            dirty = {PoolKey(*k) for k in beliefs.digest_dirty(POLICY.lease * POLICY.full_trust)}
        link = link_state(beliefs, own_cluster=OWN, members=MEMBERS, connected=True, now=now,
                          lease=POLICY.lease)  # fmt: skip
        book.step(beliefs, {}, {}, link, now=now, grace=GRACE, dirty=dirty)
        full.step(beliefs, {}, {}, link, now)
        dirty = set()
    assert book.views[key] == full.views[key]
    assert book.views[key].weights["b"].weight > 0


def test_a_quiet_import_is_not_recomputed_until_it_is_due() -> None:
    beliefs, book = Beliefs(), ImportBook(POLICY, OWN)
    for cluster in ("b", "c"):  # (two backends: with one, trust falling moves nothing)
        beliefs.apply(export(cluster, "p", published_at=1000.0), 1000.0)
        beliefs.apply(load(cluster, "p", published_at=1000.0, observed_at=1000.0), 1000.0)
    link = LinkState(False)
    assert book.step(beliefs, {}, {}, link, now=1000.0, grace=GRACE, dirty=None)
    key = PoolKey("llm", "p")
    assert book.due[key] == 1000.0 + POLICY.lease * POLICY.full_trust  # trust starts to fall
    before = book.recomputed
    assert not book.step(beliefs, {}, {}, link, now=1001.0, grace=GRACE, dirty=set())
    assert book.recomputed == before  # nothing changed and nothing due: skipped
    book.step(beliefs, {}, {}, link, now=1006.0, grace=GRACE, dirty=set())
    assert book.recomputed == before + 1  # due: the report is ageing
    assert "for a 6.0s old report" in book.views[key].weights["b"].reason


def test_a_lone_backend_is_recomputed_at_its_lease_end_not_while_its_trust_falls() -> None:
    beliefs, book = Beliefs(), ImportBook(POLICY, OWN)
    beliefs.apply(export("b", "p", published_at=1000.0), 1000.0)
    beliefs.apply(load("b", "p", published_at=1000.0, observed_at=1000.0), 1000.0)
    link = LinkState(False)
    assert book.step(beliefs, {}, {}, link, now=1000.0, grace=GRACE, dirty=None)
    key = PoolKey("llm", "p")
    assert book.memories[key].lone
    assert book.due[key] == 1000.0 + POLICY.lease  # not when its trust starts to fall
    before = book.recomputed
    for now in (1005.0, 1007.0, 1009.9):
        assert not book.step(beliefs, {}, {}, link, now=now, grace=GRACE, dirty=set())
    assert book.recomputed == before
    assert book.step(beliefs, {}, {}, link, now=1010.0, grace=GRACE, dirty=set())
    assert book.recomputed == before + 1
    assert book.views[key].weights["b"].weight == 0  # stale: it stopped serving


def _stepped_with_digests(
    beliefs: Beliefs,
    book: ImportBook,
    entries: tuple[PoolLoad, ...],
    *,
    steps: int,
    until: float = math.inf,
    beat_from: str | None = None,
) -> Iterator[float]:
    """Steps ``book`` and a full recomputation every 0.5 s from 1000, b's digest of ``entries``
    every 3 s until ``until`` (one that only renews what it said), with the agent's dirty rule,
    and ``beat_from``'s beat at every step; checks that both agree, and yields each instant."""
    full = Full()
    dirty: set[PoolKey] | None = None
    for i in range(steps):
        now = 1000.0 + 0.5 * i
        if now <= until and i % 6 == 0:
            beliefs.apply(digest("b", entries, sequence=i + 1, published_at=now), now)
            moved = {PoolKey(*k) for k in beliefs.digest_dirty(POLICY.lease * POLICY.full_trust)}
            dirty = None if dirty is None else dirty | moved
        if beat_from is not None:
            beliefs.apply(beat(beat_from, sequence=i + 1, published_at=now), now)
        link = link_state(beliefs, own_cluster=OWN, members=MEMBERS, connected=True, now=now,
                          lease=POLICY.lease)  # fmt: skip
        book.step(beliefs, {}, {}, link, now=now, grace=GRACE, dirty=dirty)
        full.step(beliefs, {}, {}, link, now)
        assert book.views == full.views, now
        dirty = set()
        yield now


def test_parked_lone_imports_move_on_with_digests_and_lapse_at_the_last_ones_lease() -> None:
    """Lone imports renewed by their exporter's digests move on with each digest, no import
    looked at one by one (``ImportBook._pop_parked``), and still stop serving at the lease end
    of the last digest heard, as a full recomputation says at every step."""
    beliefs, book = Beliefs(), ImportBook(POLICY, OWN)
    names = ("p", "q", "r")
    for name in names:
        beliefs.apply(export("b", name, published_at=1000.0), 1000.0)
    idle = tuple(entry(n, observed_at=1000.0, ready_pods=2, saturation=0.2,
                       kv_cache_utilization=0.2) for n in names)  # fmt: skip
    keys = {PoolKey("llm", n) for n in names}
    recomputed_then = None
    # b's digests until 1012; c's beats keep the link up.
    for now in _stepped_with_digests(beliefs, book, idle, steps=81, until=1012.0, beat_from="c"):
        if now == 1001.0:
            assert set(book._parked_in) == keys  # parked together on b's digest of 1000
            recomputed_then = book.recomputed
        if now == 1021.5:  # digests renewed them past two lease ends: none recomputed
            assert book.recomputed == recomputed_then
            assert {g for k, g in book._parked_in.items()} == {("b", 1012.0)}
            assert all(book.views[k].weights["b"].weight == 1_000_000 for k in keys)
        if now == 1022.0:  # the lease end of b's last digest
            assert all(book.views[k].weights["b"].weight == 0 for k in keys)
            assert not book._parked_in


def test_a_lone_import_with_a_conflicting_exporter_is_not_parked_past_its_grace_end() -> None:
    """b exports p; c exports p on other ports (a conflict, left out), then falls silent. The
    import is lone on b's digests, but c's export leaves at c's grace end, which moves the view
    (no conflict any more) while b's digests keep renewing p (a second reader's counterexample:
    parked, the renewal passed over c's grace end)."""
    beliefs, book = Beliefs(), ImportBook(POLICY, OWN)
    key = PoolKey("llm", "p")
    beliefs.apply(export("b", "p", generation=1, exported_at=900.0, published_at=1000.0), 1000.0)
    beliefs.apply(export("c", "p", generation=1, exported_at=950.0, target_ports=(9000,),
                         published_at=1000.0), 1000.0)  # fmt: skip
    beliefs.apply(beat("c", sequence=1, published_at=1000.0), 1000.0)  # c's last sign of life
    idle = (entry("p", observed_at=1000.0, ready_pods=2, saturation=0.2,
                  kv_cache_utilization=0.2),)  # fmt: skip
    for _ in _stepped_with_digests(beliefs, book, idle, steps=80):
        pass
    assert book.views[key].desired.excluded == ()  # c's export left at its grace end


def test_a_lone_backend_whose_load_moves_is_kept_as_it_was_until_it_fills() -> None:
    """One exporter alone: its load moving is applied (dirty) yet leaves the view as a full
    recomputation gives it, without a recomputation; full (no headroom), it is recomputed."""
    beliefs, book, full = Beliefs(), ImportBook(POLICY, OWN), Full()
    link = LinkState(False)
    beliefs.apply(export("b", "p", published_at=1000.0), 1000.0)
    now, dirty = 1000.0, None
    for seq, saturation in enumerate((0.2, 0.5, 0.3, 0.9, 0.4, 1.0), start=2):
        now += 1.0
        entries = (entry("p", observed_at=now, ready_pods=2, saturation=saturation,
                         kv_cache_utilization=saturation),)  # fmt: skip
        beliefs.apply(digest("b", entries, sequence=seq, published_at=now), now)
        moved = {PoolKey(*k) for k in beliefs.digest_dirty(POLICY.lease * POLICY.full_trust)}
        dirty = None if dirty is None else moved
        assert moved == {PoolKey("llm", "p")}
        book.step(beliefs, {}, {}, link, now=now, grace=GRACE, dirty=dirty)
        full.step(beliefs, {}, {}, link, now)
        assert book.views == full.views, saturation
        dirty = set()
    # Taken in once; held as it was at the four moves short of full; recomputed when full.
    assert (book.recomputed, book.kept_lone) == (2, 4)
    assert book.views[PoolKey("llm", "p")].weights["b"].reason == "saturated: 2 pods at 1.00"


def test_a_lone_import_kept_in_the_step_its_due_time_came_is_still_stepped_at_its_lease() -> None:
    """The step that reaches a lone import's due time also applies its moved load and keeps it
    as it was: its next due time (the new report's lease end) is still taken, so the report
    running out later weighs it 0, as a full recomputation does (a second reader's case)."""
    beliefs, book, full = Beliefs(), ImportBook(POLICY, OWN), Full()
    link = LinkState(False)
    beliefs.apply(export("b", "p", published_at=1000.0), 1000.0)
    beliefs.apply(load("b", "p", sequence=2, published_at=1000.0, observed_at=1000.0), 1000.0)
    key = PoolKey("llm", "p")
    steps = (
        (1000.0, None, None),
        (1010.5, 0.5, {key}),  # past the first report's lease, with a new report: kept
        (1021.0, None, set()),  # only a beat: the new report ran out at 1020.5
    )
    for seq, (now, saturation, dirty) in enumerate(steps, start=3):
        if saturation is not None:
            beliefs.apply(load("b", "p", sequence=seq, published_at=now, observed_at=now,
                               saturation=saturation), now)  # fmt: skip
        beliefs.apply(beat("b", sequence=seq, published_at=now), now)
        book.step(beliefs, {}, {}, link, now=now, grace=GRACE, dirty=dirty)
        full.step(beliefs, {}, {}, link, now)
        assert book.views == full.views, now
    assert book.kept_lone == 1
    assert book.views[key].weights["b"].weight == 0


def test_a_dirty_key_is_recomputed_and_a_withdrawn_one_removed() -> None:
    beliefs, book = Beliefs(), ImportBook(POLICY, OWN)
    beliefs.apply(export("b", "p", published_at=1000.0), 1000.0)
    link = LinkState(False)
    book.step(beliefs, {}, {}, link, now=1000.0, grace=GRACE, dirty=None)
    assert PoolKey("llm", "p") in book.views
    beliefs.apply(export("b", "p", generation=2, published_at=1001.0, withdrawn=True), 1001.0)
    assert book.step(beliefs, {}, {}, link, now=1001.0, grace=GRACE, dirty={PoolKey("llm", "p")})
    assert book.views == {}
    assert book.memories == {}


def test_a_renewal_of_heres_own_report_does_not_move_its_kept_window() -> None:
    """Here's demand is its arrivals / the share it kept while they were rated: that window ends
    when its report was sampled. Ended at the renewal instead, a digest repeating the report
    moved the window, so a full recomputation differed from the book (found by review)."""
    beliefs, book, full = Beliefs(), ImportBook(POLICY, OWN), Full()
    key = PoolKey("llm", "p")
    rates = {"arrival_rate": 14.0, "completion_rate": 8.0, "capacity_rate": 8.0}
    busy = entry("p", observed_at=1000.0, ready_pods=2, saturation=0.9,
                 kv_cache_utilization=0.9, **rates)  # fmt: skip
    idle = entry("p", observed_at=1000.0, ready_pods=2, saturation=0.2, kv_cache_utilization=0.2,
                 arrival_rate=2.0, completion_rate=2.0, capacity_rate=8.0)  # fmt: skip
    for seq, cluster in enumerate(("a", "b"), start=1):
        beliefs.apply(export(cluster, "p", published_at=1000.0, generation=seq), 1000.0)
    beliefs.apply(digest("a", (busy,), sequence=3, published_at=1000.0), 1000.0)
    beliefs.apply(digest("b", (idle,), sequence=4, published_at=1000.0), 1000.0)
    dirty: set[PoolKey] | None = None
    for i in range(12):  # the weights move towards the spill; here's kept share changes
        now = 1000.0 + 0.5 * i
        if i == 9:  # a's digest renews its report (same content, sampled later)
            renewed = msgspec.structs.replace(busy, observed_at=now)
            beliefs.apply(digest("a", (renewed,), sequence=5, published_at=now), now)
            moved = {PoolKey(*k) for k in beliefs.digest_dirty(POLICY.lease * POLICY.full_trust)}
            assert key not in moved  # (only renewed: the book is not told)
            dirty = set() if dirty is None else dirty | moved
        link = link_state(beliefs, own_cluster=OWN, members=MEMBERS, connected=True, now=now,
                          lease=POLICY.lease)  # fmt: skip
        book.step(beliefs, {}, {}, link, now=now, grace=GRACE, dirty=dirty)
        full.step(beliefs, {}, {}, link, now)
        assert book.views[key] == full.views[key], now
        dirty = set()
