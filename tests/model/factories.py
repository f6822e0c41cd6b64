"""Small builders for model tests: events and pools with sensible defaults."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from federation.messages import (
    EndpointAddress,
    ExportEvent,
    Heartbeat,
    LoadDigest,
    LoadReport,
    ParentGateway,
    PoolLoad,
)
from federation.model.imports import DesiredImport
from federation.model.pools import EXPORT_VALUE, LocalPool, PoolKey
from federation.model.views import ImportView
from federation.model.weights import BackendLoad, BackendWeight


def export(cluster: str = "a", name: str = "pool", **kw: Any) -> ExportEvent:
    base: dict[str, Any] = {
        "cluster": cluster,
        "namespace": "llm",
        "name": name,
        "generation": 1,
        "exported_at": 100.0,
        "published_at": 100.0,
        "target_ports": (8000,),
        "model": "m",
    }
    return ExportEvent(**{**base, **kw})


def load(cluster: str = "a", name: str = "pool", **kw: Any) -> LoadReport:
    base: dict[str, Any] = {
        "cluster": cluster,
        "namespace": "llm",
        "name": name,
        "sequence": 1,
        "observed_at": 100.0,
        "published_at": 100.0,
        "ready_pods": 4,
        "saturation": 0.5,
    }
    return LoadReport(**{**base, **kw})


def entry(name: str = "pool", **kw: Any) -> PoolLoad:
    base: dict[str, Any] = {"namespace": "llm", "name": name, "observed_at": 100.0,
                            "ready_pods": 4, "saturation": 0.5}  # fmt: skip
    return PoolLoad(**{**base, **kw})


def digest(cluster: str = "a", pools: tuple[PoolLoad, ...] | None = None, **kw: Any) -> LoadDigest:
    base: dict[str, Any] = {"cluster": cluster, "sequence": 1, "published_at": 100.0}
    return LoadDigest(**{**base, "pools": (entry(),) if pools is None else pools, **kw})


def beat(cluster: str = "a", **kw: Any) -> Heartbeat:
    return Heartbeat(**{"cluster": cluster, "sequence": 1, "published_at": 100.0, **kw})


def pool(name: str = "pool", exported: bool = False, **kw: Any) -> LocalPool:
    base: dict[str, Any] = {
        "namespace": "llm",
        "name": name,
        "target_ports": (8000,),
        "model": "m",
        "export": EXPORT_VALUE if exported else None,
    }
    return LocalPool(**{**base, **kw})


def backend_loads(*, max_pods: int, max_age: float) -> st.SearchStrategy[BackendLoad | None]:
    """A backend's load as the weight policy sees it, or None (no report yet); mostly healthy."""
    return st.one_of(
        st.none(),
        st.builds(
            BackendLoad,
            ready_pods=st.integers(0, max_pods),
            saturation=st.floats(0, 1),
            status=st.sampled_from(["ok", "ok", "ok", "unreachable", "shedding"]),
            age=st.floats(0, max_age),
        ),
    )


def gateway_view(
    key: PoolKey, weights: dict[str, int], *, port: int = 8080, namespace: str = "llm"
) -> ImportView:
    """An import of ``key`` exported by ``weights``' clusters, each behind one parent Gateway
    at 192.0.2.<n>:``port`` (TEST-NET-1: never dialled)."""
    clusters = tuple(sorted(weights))
    exports = tuple(
        export(
            c,
            key.name,
            namespace=namespace,
            parents=(
                ParentGateway(
                    namespace=namespace,
                    name="gw",
                    addresses=(EndpointAddress(host=f"192.0.2.{i + 1}", port=port),),
                ),
            ),
        )
        for i, c in enumerate(clusters)
    )
    desired = DesiredImport(key, clusters, exports=exports)
    return ImportView(desired, {c: BackendWeight(w, "t") for c, w in weights.items()})
