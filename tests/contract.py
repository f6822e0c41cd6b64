"""The `federation demo --json` contract, checked from the snapshot alone."""

from __future__ import annotations

from typing import Any


def check_demo_snapshot(snap: dict[str, Any]) -> None:
    assert isinstance(snap["clusterset"], str)
    assert isinstance(snap["bus_ready_after_s"], float | int | None)
    assert isinstance(snap["converged_after_s"], float | int)
    clusters = snap["clusters"]
    exporters: dict[str, set[str]] = {}
    for name, c in clusters.items():
        assert set(c["exports"]) <= set(c["pools"])
        for key in c["exports"]:
            exporters.setdefault(key, set()).add(name)
    for name, c in clusters.items():
        imports = c["imports"]
        assert set(imports) == set(exporters), f"{name} holds the wrong imports"
        for key, imp in imports.items():
            assert imp["exportingClusters"] == sorted(exporters[key]), (name, key)
            expected = set(exporters[key])
            if key in c["pools"] and key not in c["exports"]:
                expected.add("local")
            weights = imp["weights"]
            assert set(weights) == expected, (name, key, weights)
            assert all(isinstance(w, int) and 0 <= w <= 1_000_000 for w in weights.values())
            assert any(w > 0 for w in weights.values()), (name, key, weights)
