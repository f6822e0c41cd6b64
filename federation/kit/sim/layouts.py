"""Demo layouts: which clusters exist and which InferencePools each one has and exports.

Deterministic for a given (clusters, pools), and shaped to exercise every import rule: one pool
that every cluster has but only some export (so others import it beside a ``local`` pool), pools
shared by neighbouring clusters, and a private pool per cluster that nobody exports.
"""

from __future__ import annotations

from collections.abc import Mapping

from federation.messages import EndpointAddress
from federation.model.pools import EXPORT_VALUE, LocalPool, PoolKey, is_exported

NAMESPACE = "llm"
CLUSTER_NAMES = ("us-east", "eu-west", "ap-south", "us-west", "eu-north", "sa-east")
MODELS = (
    "llama-3-70b",
    "mistral-7b",
    "qwen-2-72b",
    "phi-4",
    "gemma-2-27b",
    "mixtral-8x7b",
    "deepseek-v3",
    "command-r",
)


def cluster_names(count: int) -> list[str]:
    return [CLUSTER_NAMES[i] if i < len(CLUSTER_NAMES) else f"cluster-{i}" for i in range(count)]


def _pool(cluster: str, name: str, exported: bool) -> LocalPool:
    return LocalPool(
        namespace=NAMESPACE,
        name=name,
        target_ports=(8000,),
        app_protocol="http",
        model=name,
        # In-cluster DNS names: data for importing gateways, never dialled by the demo.
        epp=EndpointAddress(host=f"{name}-epp.{NAMESPACE}.svc.{cluster}.local", port=9002),
        export=EXPORT_VALUE if exported else None,
    )


def demo_layout(clusters: list[str], pools: int) -> dict[str, list[LocalPool]]:
    layout: dict[str, list[LocalPool]] = {}
    shared = len(MODELS) - 1
    for i, cluster in enumerate(clusters):
        own = [_pool(cluster, MODELS[0], exported=i % 3 != 2)]
        for j in range(1, max(0, pools - 1)):
            name = MODELS[1 + (i + j) % shared]
            if all(p.name != name for p in own):
                own.append(_pool(cluster, name, exported=(i + j) % 3 != 0))
        if pools >= 2:
            own.append(_pool(cluster, f"batch-{cluster}", exported=False))
        layout[cluster] = own[:pools]
    return layout


def expected_imports(
    layout: Mapping[str, list[LocalPool]],
) -> dict[str, dict[PoolKey, tuple[tuple[str, ...], bool]]]:
    """The truth: per cluster, each import's exporting clusters and whether it has ``local``."""
    exporters: dict[PoolKey, set[str]] = {}
    for cluster, pools in layout.items():
        for pool in pools:
            if is_exported(pool):
                exporters.setdefault(pool.key, set()).add(cluster)
    truth: dict[str, dict[PoolKey, tuple[tuple[str, ...], bool]]] = {}
    for cluster, pools in layout.items():
        unexported = {p.key for p in pools if not is_exported(p)}
        truth[cluster] = {
            key: (tuple(sorted(names)), key in unexported) for key, names in exporters.items()
        }
    return truth
