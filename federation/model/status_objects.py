"""The status this agent writes into Kubernetes objects, merged with what others wrote.

Both lists are shared with other controllers: an InferencePool's ``status.parents[]`` (Gateway
implementations write their entries there too) and an InferencePoolImport's
``status.controllers[]`` (a list-map keyed by controller ``name``). We only ever add, replace or
remove *our* entry, keep everyone else's in place, and keep a condition's
``lastTransitionTime`` while its status does not change, so a rewrite is not a transition.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from federation.model.conditions import Condition
from federation.model.pools import PoolKey
from federation.model.views import ImportView

IMPORT_GROUP: Final = "inference.networking.x-k8s.io"
IMPORT_KIND: Final = "InferencePoolImport"
DEFAULT_CONTROLLER: Final = "inference-federation.io/agent"  # = Settings.controller_name

Obj = dict[str, Any]


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition_object(
    condition: Condition, previous: Iterable[Any], *, now: float, generation: int | None
) -> Obj:
    """``condition`` as a metav1.Condition, keeping the old transition time if status held."""
    since = iso(now)
    for old in previous:
        if isinstance(old, Mapping) and old.get("type") == condition.type:
            if old.get("status") == condition.status and isinstance(
                old.get("lastTransitionTime"), str
            ):
                since = old["lastTransitionTime"]
            break
    out: Obj = {
        "type": condition.type,
        "status": condition.status,
        "reason": condition.reason,
        "message": condition.message[:32768],
        "lastTransitionTime": since,
    }
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def _is_ours_on_pool(entry: Any, key: PoolKey, controller: str) -> bool:
    if not isinstance(entry, Mapping):
        return False
    ref = entry.get("parentRef")
    return (
        entry.get("controllerName") == controller
        and isinstance(ref, Mapping)
        and ref.get("kind") == IMPORT_KIND
        and ref.get("name") == key.name
    )


def pool_parents(
    existing: Sequence[Any],
    *,
    key: PoolKey,
    controller: str,
    condition: Condition | None,
    generation: int | None,
    now: float,
) -> list[Any]:
    """The pool's ``status.parents`` with our entry set to ``condition`` (removed when None)."""
    ours = next((e for e in existing if _is_ours_on_pool(e, key, controller)), None)
    others = [e for e in existing if e is not ours]
    if condition is None:
        return others
    previous = ours.get("conditions", []) if isinstance(ours, Mapping) else []
    entry = {
        "parentRef": {
            "group": IMPORT_GROUP,
            "kind": IMPORT_KIND,
            "namespace": key.namespace,
            "name": key.name,
        },
        "controllerName": controller,
        "conditions": [
            condition_object(condition, _list(previous), now=now, generation=generation)
        ],
    }
    if ours is None:
        return [*others, entry] if len(others) < 32 else others  # the list holds 32
    return [entry if e is ours else e for e in existing]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def import_entry(
    view: ImportView, previous: Mapping[str, Any] | None, *, controller: str, now: float
) -> Obj:
    """Our ``status.controllers[]`` entry for one import."""
    old_conditions = _list(previous.get("conditions")) if previous else []
    return {
        "name": controller,
        "exportingClusters": [{"name": c} for c in view.desired.exporting_clusters],
        "conditions": [
            condition_object(c, old_conditions, now=now, generation=None)
            for c in view.conditions[:8]
        ],
    }


def import_controllers(
    existing: Sequence[Any], *, controller: str, view: ImportView | None, now: float
) -> list[Any]:
    """The import's ``status.controllers`` with our entry set from ``view`` (removed if None)."""
    ours = next(
        (e for e in existing if isinstance(e, Mapping) and e.get("name") == controller), None
    )
    others = [e for e in existing if e is not ours]
    if view is None:
        return others
    entry = import_entry(view, ours, controller=controller, now=now)
    if ours is None:
        return [*others, entry] if len(others) < 8 else others  # the list holds 8
    return [entry if e is ours else e for e in existing]


def has_other_controllers(obj: Mapping[str, Any], controller: str) -> bool:
    entries = _list((obj.get("status") or {}).get("controllers"))
    return any(isinstance(e, Mapping) and e.get("name") != controller for e in entries)


def is_ours(obj: Mapping[str, Any], controller: str) -> bool:
    entries = _list((obj.get("status") or {}).get("controllers"))
    return any(isinstance(e, Mapping) and e.get("name") == controller for e in entries)
