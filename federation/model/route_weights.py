"""HTTPRoute weights: the backendRefs of a marked route rule, kept equal to an import's weights.

Every Gateway API implementation honours ``backendRefs[].weight`` (0 to 1,000,000, the scale of
the agent's weights, so the integers are the same). A user opts a route in with the label
``inference-federation.io/route-weights: "true"``. In such a route, a rule is the agent's when
its ``backendRefs`` include an ``InferencePool`` (``inference.networking.k8s.io``) of the
route's namespace whose name is an import; the agent then keeps that rule's ``backendRefs``
equal to:

1. that InferencePool ref, as the user wrote it, with the weight of the backend inside this
   cluster (``local``, or this cluster's own export; 0 when this cluster has none);
2. one ref per remote backend: the Service of :mod:`federation.model.backend_services`, with
   that cluster's weight. A backend at weight 0 stays in the list at 0 (a drain), so a rule
   never becomes empty.

The weights are those of the import's annotation (``inference-federation.io/weights``, itself
coalesced): a route holds the same integers as its InferencePoolImport, at the same moments,
and any other value in an owned weight is drift, repaired at once. When *every* backend is at
0 (an agent that has heard no load yet, every exporter silent) the rule is left as it is: zeros
everywhere would answer every request with a 500, and what the rule holds is no worse.

The agent owns only those refs' weights and its Services' refs; everything else in the route
(matches, filters, timeouts, other rules, the pool ref's other fields) is the user's and kept.
When a pool stops being imported, a rule that still holds its Services is put back to the pool
ref alone (without a weight: the CRD's default). A route is left alone, with a reason, when
another controller is named in the annotation
``inference-federation.io/weights-controller``, or when a rule it would own also holds a
backend it does not know (``ForeignBackendRef``), a second imported pool, or a pool of
another namespace. A rule holds at most 16 refs (the CRD's limit): beyond it, the remote
backends of lowest weight are left out and said so.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from federation.model.backend_services import RemoteBackend
from federation.model.pool_objects import POOL_GROUP, ROUTE_LABEL
from federation.model.pools import PoolKey
from federation.model.raw_json import as_list as _list
from federation.model.raw_json import as_mapping as _dict
from federation.model.views import ImportView

__all__ = [
    "ROUTE_LABEL",
    "RoutePlan",
    "RuleWeights",
    "is_marked",
    "route_plan",
    "rule_patch",
    "services_named",
]

ROUTE_CONTROLLER_ANNOTATION: Final = "inference-federation.io/weights-controller"
MAX_BACKEND_REFS: Final = 16
POOL_REF: Final = "InferencePool"  # the key of the pool ref among a rule's weights

Obj = dict[str, Any]


@dataclass(frozen=True)
class RuleWeights:
    """One rule the agent owns: the refs it should hold, and the weights it holds now."""

    index: int
    key: PoolKey
    refs: list[Obj]
    wanted: dict[str, int]  # POOL_REF or a cluster → weight
    written: dict[str, int] | None  # None: the refs themselves differ (write at once)

    @property
    def in_place(self) -> bool:
        return self.written == self.wanted


@dataclass(frozen=True)
class RoutePlan:
    rules: tuple[RuleWeights, ...] = ()
    refused: tuple[str, str] | None = None  # (reason, message): the route is left alone
    notes: tuple[str, ...] = field(default=())


def is_marked(route: Mapping[str, Any]) -> bool:
    labels = _dict(_dict(route.get("metadata")).get("labels"))
    return labels.get(ROUTE_LABEL) == "true"


def _is_pool_ref(ref: Mapping[str, Any]) -> bool:
    return ref.get("group") == POOL_GROUP and ref.get("kind") == POOL_REF


def _service_ref_name(ref: Mapping[str, Any], namespace: str) -> str | None:
    """The Service a ref names in ``namespace`` (None: another kind, or another namespace)."""
    if ref.get("group", "") != "" or ref.get("kind", "Service") != "Service":
        return None
    if ref.get("namespace", namespace) != namespace:
        return None
    name = ref.get("name")
    return name if isinstance(name, str) else None


def services_named(route: Mapping[str, Any]) -> set[PoolKey]:
    """Every Service the route sends to, as (namespace, name), whoever's rule it is."""
    namespace = str(_dict(route.get("metadata")).get("namespace", ""))
    named = set()
    for rule in _list(_dict(route.get("spec")).get("rules")):
        for ref in map(_dict, _list(_dict(rule).get("backendRefs"))):
            ns = ref.get("namespace", namespace)
            if (name := _service_ref_name(ref, ns)) is not None:
                named.add(PoolKey(str(ns), name))
    return named


def _weight(ref: Mapping[str, Any]) -> int:
    w = ref.get("weight", 1)  # the CRD's default
    return w if isinstance(w, int) and not isinstance(w, bool) else -1


def service_ref(b: RemoteBackend, weight: int) -> Obj:
    # group and kind written out: the API server would default them, and we compare with it.
    return {"group": "", "kind": "Service", "name": b.name, "port": b.port, "weight": weight}


def route_plan(
    route: Mapping[str, Any],
    views: Mapping[PoolKey, ImportView],
    weights: Mapping[PoolKey, Mapping[str, int]],
    backends: Mapping[PoolKey, tuple[RemoteBackend, ...]],
    owned: Mapping[PoolKey, Collection[str]],
    *,
    own_cluster: str,
    controller: str,
) -> RoutePlan:
    """What the agent should write in ``route`` (a marked one), or why it must not touch it.

    ``weights`` are, per import, the weights to write: those the import's annotation holds,
    so a route says exactly what its InferencePoolImport says (a backend it does not list: 0).
    ``owned`` lists, per import, the names of Services the agent owns for it (also those of
    backends that went away: their refs are dropped, not treated as foreign).
    """
    meta = _dict(route.get("metadata"))
    other = _dict(meta.get("annotations")).get(ROUTE_CONTROLLER_ANNOTATION)
    if other is not None and other != controller:
        return RoutePlan(refused=("OtherController", f"weights are {other!r}'s to write"))
    namespace = str(meta.get("namespace", ""))
    rules, notes = [], []
    for index, rule in enumerate(_list(_dict(route.get("spec")).get("rules"))):
        refs = [_dict(r) for r in _list(_dict(rule).get("backendRefs"))]
        pools = [
            (i, PoolKey(str(r.get("namespace", namespace)), str(r.get("name"))))
            for i, r in enumerate(refs)
            if _is_pool_ref(r)
        ]
        imported = [(i, k) for i, k in pools if k in views]
        if not imported:
            if (released := _released(index, refs, pools, owned, namespace)) is not None:
                rules.append(released)  # its import went away: back to the pool alone
            continue
        if len({k for _, k in imported}) > 1 or len(imported) > 1:
            return RoutePlan(
                refused=("SeveralImportsInOneRule", f"rule {index} names more than one pool")
            )
        ((at, key),) = imported
        if key.namespace != namespace:
            return RoutePlan(
                refused=("CrossNamespace", f"rule {index}: pool {key} is not in {namespace}")
            )
        ours = owned.get(key, ())
        for i, r in enumerate(refs):
            if i != at and _service_ref_name(r, namespace) not in ours:
                name = r.get("name")
                return RoutePlan(
                    refused=("ForeignBackendRef", f"rule {index} also sends to {name!r}")
                )
        rule_weights, note = _rule(index, key, refs, at, views[key], weights.get(key, {}),
                                   backends.get(key, ()), own_cluster=own_cluster)  # fmt: skip
        if note:
            notes.append(note)
        if not any(rule_weights.wanted.values()):
            # Nothing known to serve (an agent starting, every exporter silent): writing zeros
            # would turn the rule into 500s for everyone; what it holds is no worse.
            notes.append(f"rule {index}: every backend at weight 0, left as it is")
            continue
        rules.append(rule_weights)
    if not rules and not notes:
        notes.append("no rule sends to an imported InferencePool")
    return RoutePlan(rules=tuple(rules), notes=tuple(notes))


def _released(
    index: int,
    refs: list[Mapping[str, Any]],
    pools: list[tuple[int, PoolKey]],
    owned: Mapping[PoolKey, Collection[str]],
    namespace: str,
) -> RuleWeights | None:
    """A rule still holding our Services of a pool that is no longer imported: without them,
    and its pool ref without our weight (the CRD's default), so no share goes to a Service that
    is about to be deleted with its import."""
    ours = {name for _, key in pools for name in owned.get(key, ())}
    if not ours or not any(_service_ref_name(r, namespace) in ours for r in refs):
        return None
    at, key = pools[0]
    kept = [
        {k: v for k, v in r.items() if k != "weight"} if i == at else dict(r)
        for i, r in enumerate(refs)
        if _service_ref_name(r, namespace) not in ours
    ]
    return RuleWeights(index, key, kept, {POOL_REF: 1}, None)


def _rule(
    index: int,
    key: PoolKey,
    refs: list[Mapping[str, Any]],
    at: int,
    view: ImportView,
    weights: Mapping[str, int],
    remote: tuple[RemoteBackend, ...],
    *,
    own_cluster: str,
) -> tuple[RuleWeights, str]:
    here = view.desired.here(own_cluster)

    def weight(backend: str | None) -> int:
        return weights.get(backend, 0) if backend is not None else 0

    ranked = sorted(remote, key=lambda b: (-weight(b.cluster), b.cluster))
    kept = sorted(ranked[: MAX_BACKEND_REFS - 1], key=lambda b: b.cluster)
    note = ""
    if len(ranked) > len(kept):
        dropped = [b.cluster for b in ranked[len(kept) :]]
        note = f"rule {index}: {len(dropped)} backend(s) beyond the 16 refs left out: {dropped}"
    wanted = {POOL_REF: weight(here)} | {b.cluster: weight(b.cluster) for b in kept}
    pool_ref = {**refs[at], "weight": wanted[POOL_REF]}
    want_refs = [pool_ref] + [service_ref(b, wanted[b.cluster]) for b in kept]
    return RuleWeights(index, key, want_refs, wanted, _written(refs, want_refs, at, kept)), note


def _written(
    refs: list[Mapping[str, Any]], want: list[Obj], at: int, kept: list[RemoteBackend]
) -> dict[str, int] | None:
    """The weights the rule holds, if its refs are the wanted ones but for weights."""
    if at != 0 or len(refs) != len(want):
        return None

    def bare(ref: Mapping[str, Any]) -> Obj:
        out = {k: v for k, v in ref.items() if k != "weight"}
        out.setdefault("group", "")
        out.setdefault("kind", "Service")
        return out

    if any(bare(h) != bare(w) for h, w in zip(refs, want, strict=True)):
        return None
    weights = [_weight(r) for r in refs]
    if any(w < 0 for w in weights):
        return None
    return {POOL_REF: weights[0]} | {b.cluster: w for b, w in zip(kept, weights[1:], strict=True)}


def rule_patch(resource_version: str, rules: list[RuleWeights]) -> list[Obj]:
    """A JSON patch writing only these rules' backendRefs, if the route is still the one read."""
    ops: list[Obj] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version}
    ]
    for r in rules:
        ops.append({"op": "add", "path": f"/spec/rules/{r.index}/backendRefs", "value": r.refs})
    return ops
