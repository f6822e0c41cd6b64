import pytest

from federation.kit.sim.layouts import cluster_names, demo_layout, expected_imports
from federation.model.pools import is_exported


@pytest.mark.parametrize(("clusters", "pools"), [(3, 4), (2, 2), (5, 6), (3, 1), (12, 8)])
def test_layouts_exercise_every_import_rule(clusters: int, pools: int) -> None:
    names = cluster_names(clusters)
    assert len(set(names)) == clusters
    layout = demo_layout(names, pools)
    assert all(len(p) == pools for p in layout.values())
    truth = expected_imports(layout)
    exported = {p.key for ps in layout.values() for p in ps if is_exported(p)}
    assert all(set(t) == exported for t in truth.values())
    if clusters >= 3 and pools >= 2:
        assert any(len(exp) >= 2 for t in truth.values() for exp, _ in t.values())
        assert any(local for t in truth.values() for _, local in t.values())
        unexported = {p.key for ps in layout.values() for p in ps} - exported
        assert unexported
