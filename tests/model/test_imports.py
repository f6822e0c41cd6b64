from federation.model.beliefs import Beliefs
from federation.model.imports import desired_imports, resolve_conflicts
from federation.model.pools import PoolKey
from tests.model.factories import beat, export, pool

KEY = PoolKey("llm", "pool")


def _beliefs(*events: object, at: float = 100.0) -> Beliefs:
    b = Beliefs()
    for e in events:
        b.apply(e, at)  # type: ignore[arg-type]
    return b


def test_every_member_imports_each_exported_pool_listing_every_exporter() -> None:
    b = _beliefs(export("a"), export("b"), beat("a"), beat("b"))
    for me in ("a", "b", "c"):
        got = desired_imports(b, {}, own_cluster=me, now=101, grace=60)
        assert got[KEY].exporting_clusters == ("a", "b")
        assert got[KEY].backends == ("a", "b")


def test_a_pool_exported_by_nobody_is_imported_nowhere() -> None:
    b = _beliefs(export("a", withdrawn=True), beat("a"))
    assert desired_imports(b, {KEY: pool()}, own_cluster="b", now=101, grace=60) == {}


def test_a_same_named_unexported_local_pool_adds_the_local_backend() -> None:
    b = _beliefs(export("a"), beat("a"))
    got = desired_imports(b, {KEY: pool(exported=False)}, own_cluster="b", now=101, grace=60)
    assert got[KEY].backends == ("a", "local")


def test_an_exporter_does_not_get_a_local_backend_for_its_own_exported_pool() -> None:
    b = _beliefs(export("a"), beat("a"))
    got = desired_imports(b, {KEY: pool(exported=True)}, own_cluster="a", now=101, grace=60)
    assert got[KEY].backends == ("a",)


def test_an_exporter_silent_past_the_grace_period_leaves_exporting_clusters() -> None:
    b = _beliefs(export("a"), export("b"), beat("a"), beat("b"))
    b.apply(beat("b", sequence=2, published_at=200.0), 200.0)
    got = desired_imports(b, {}, own_cluster="c", now=170.0, grace=60)
    assert got[KEY].exporting_clusters == ("b",)


def test_own_exports_never_expire_by_grace() -> None:
    b = _beliefs(export("a"))
    got = desired_imports(b, {}, own_cluster="a", now=10_000.0, grace=60)
    assert got[KEY].exporting_clusters == ("a",)


def test_conflict_oldest_export_wins_and_names_fields() -> None:
    old = export("b", exported_at=50.0, target_ports=(8000,))
    young = export("a", exported_at=60.0, target_ports=(9000,), model="other")
    same = export("c", exported_at=70.0)
    accepted, conflicts = resolve_conflicts([young, same, old])
    assert [e.cluster for e in accepted] == ["b", "c"]
    assert len(conflicts) == 1
    assert conflicts[0].cluster == "a"
    assert conflicts[0].winner == "b"
    assert conflicts[0].fields == ("target_ports", "model")


def test_conflict_ties_on_export_time_break_by_cluster_name() -> None:
    a = export("a", exported_at=50.0, app_protocol="http")
    b = export("b", exported_at=50.0, app_protocol="kubernetes.io/h2c")
    for order in ([a, b], [b, a]):
        accepted, conflicts = resolve_conflicts(order)
        assert [e.cluster for e in accepted] == ["a"]
        assert conflicts[0].fields == ("app_protocol",)


def test_excluded_exporters_are_reported_on_the_import() -> None:
    b = _beliefs(
        export("a", exported_at=1.0), export("b", exported_at=2.0, model="x"), beat("a"), beat("b")
    )
    got = desired_imports(b, {}, own_cluster="c", now=101, grace=60)[KEY]
    assert got.exporting_clusters == ("a",)
    assert [c.cluster for c in got.excluded] == ["b"]
