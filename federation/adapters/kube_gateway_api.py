"""The Gateway API feed: Services, EndpointSlices and HTTPRoute weights that any gateway honours.

Per import, one selector-less Service and one EndpointSlice per remote backend
(:mod:`federation.model.backend_services`), owned by the InferencePoolImport; and in every
HTTPRoute marked for it, the backendRefs of the rules that send to an imported pool
(:mod:`federation.model.route_weights`). Runs after the InferencePoolImport writes (the owner
references need the imports' uids) on the same API client and informers as
:class:`~federation.adapters.kube_cluster.KubeCluster`, plus its own EndpointSlice informer.

Writes, in an order that never routes to a missing object: create or repair Services and
slices, then the routes, then delete the Services no longer wanted. A route write is a JSON
patch of only the owned rules' ``backendRefs`` behind a ``test`` of the ``resourceVersion``
read (a concurrent edit fails it; the route is read again and the patch recomputed), at the
coalesced rate of the weights annotation. A user's edit of something we own (a weight, a
port, a Service's selector) is seen by the informers and repaired at once; an object we do
not own is never touched, and is reported in ``federation status`` ("feeds", "gateway-api").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Final

from federation.adapters.kube import (
    ENDPOINT_SLICES,
    HTTPROUTES,
    SERVICES,
    Informer,
    Obj,
    Resource,
    is_status,
    object_key,
    status_message,
)
from federation.adapters.kube_cluster import CONFLICT_RETRIES, KubeCluster
from federation.model.backend_services import (
    SLICE_MANAGER,
    SLICE_MANAGER_LABEL,
    RemoteBackend,
    endpoint_slice_body,
    is_owned,
    owned_by,
    remote_backends,
    service_body,
    service_drift,
    slice_drift,
)
from federation.model.failures import explain
from federation.model.pools import PoolKey
from federation.model.route_weights import is_marked, route_plan, rule_patch, services_named
from federation.model.views import ImportView, written_weights

log = logging.getLogger(__name__)

REFUSED_RETRY: Final = 600.0  # seconds before a body the API refused is sent again unchanged
LEFT_OUT_SHOWN: Final = 50  # notes per kind in status: enough to see a pattern, never a flood


def _ours_or_labelled(obj: Mapping[str, Any]) -> bool:
    """A slice this feed may own: labelled as ours, or owned (a label someone edited is
    repaired, not taken for a stranger's slice)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    labelled = isinstance(labels, dict) and labels.get(SLICE_MANAGER_LABEL) == SLICE_MANAGER
    return labelled or is_owned(obj)


def _uid(obj: Mapping[str, Any] | None) -> str | None:
    uid = ((obj or {}).get("metadata") or {}).get("uid")
    return uid if isinstance(uid, str) and uid else None


class GatewayApiFeed:
    def __init__(
        self,
        cluster: KubeCluster,
        *,
        own_cluster: str,
        controller: str,
        namespaces: Sequence[str] | None = None,
        backoff: Sequence[float] = (0.2, 0.5, 1.0, 2.0, 5.0),
    ) -> None:
        self.cluster = cluster
        self.kube = cluster.kube
        self.own_cluster = own_cluster
        self.controller = controller
        self._wake = asyncio.Event()  # objects changed (maybe someone else's edit: repair it)
        # Only the slices we label as ours are kept: every other slice in the cluster changes
        # with every pod, and must neither fill this cache nor wake a repair.
        self.slices = Informer(
            self.kube, ENDPOINT_SLICES, namespaces=namespaces, backoff=backoff,
            on_change=self._wake.set, keep=_ours_or_labelled,
        )  # fmt: skip
        for informer in (cluster.services, cluster.routes, cluster.imports):
            informer.listen(self._wake.set)
        self.counts: Counter[str] = Counter()
        self.routes: dict[str, str] = {}  # marked route → what the agent does with it
        self.left_out: dict[str, str] = {}  # "ns/pool cluster" → why it has no Service
        # Bodies the API refused (422): (body, why, retry after): not resent unchanged before.
        self._refused: dict[tuple[str, PoolKey], tuple[str, str, float]] = {}
        self._desired: dict[PoolKey, ImportView] | None = None
        self._owned_before: dict[PoolKey, set[str]] = {}  # Service names, per import
        self._lock = asyncio.Lock()

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.slices.run(), name="gateway-api/endpointslices")
            tg.create_task(self._repair(), name="gateway-api/repair")

    async def _repair(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._desired is None:
                continue
            try:
                await self._sync()
            except Exception as exc:  # the next change or the agent's next feed tries again
                log.warning("gateway-api: repairing failed: %s", explain(exc))

    def notes(self) -> dict[str, object]:
        refused = {k: v for k, v in sorted(self.routes.items()) if not v.startswith("managed")}
        return {
            "left_out": dict(sorted(self.left_out.items())[:LEFT_OUT_SHOWN]),
            "routes": dict(sorted(self.routes.items())[:LEFT_OUT_SHOWN]),
            "routes_refused": len(refused),
            "counts": dict(sorted(self.counts.items())),
        }

    # -- applying -----------------------------------------------------------------------------

    async def apply(self, views: Mapping[PoolKey, ImportView]) -> None:
        self._desired = dict(views)
        await self._sync()

    async def _sync(self) -> None:
        """Make the objects match the newest views (read under the lock: a repair queued
        behind a newer apply must not bring older views back)."""
        c = self.cluster
        for informer in (c.imports, c.services, c.routes, self.slices):
            await informer.synced.wait()
        async with self._lock:
            views = self._desired or {}
            failed: list[str] = []
            wanted, left_out = self._wanted(views)
            for forgotten in [k for k in self._refused if k[1] not in wanted]:
                del self._refused[forgotten]  # that backend went: nothing to remember
            ready: dict[PoolKey, list[RemoteBackend]] = {}
            for b, uid in wanted.values():
                try:
                    taken = await self._ensure(b, uid)
                    if taken is None:
                        ready.setdefault(b.key, []).append(b)
                    else:
                        left_out[f"{b.key} {b.cluster}"] = taken
                except Exception as exc:  # one bad object must not block the others
                    self.counts["object_errors"] += 1
                    left_out[f"{b.key} {b.cluster}"] = f"API error: {exc}"[:200]
                    failed.append(f"{b.name}: {exc}")
            for what, why in left_out.items():
                if self.left_out.get(what) != why:  # said once per change, not per apply
                    self.counts["backends_left_out"] += 1
                    log.warning("gateway-api: %s left out: %s", what, why)
            self.left_out = left_out
            backends = {k: tuple(sorted(v, key=lambda b: b.cluster)) for k, v in ready.items()}
            owned = self._owned_names(ready)
            weights = self._weights(views)
            for key in sorted(c.routes.objects):
                try:
                    await self._apply_route(key, views, weights, backends, owned)
                except Exception as exc:
                    self.counts["route_errors"] += 1
                    self.routes[str(key)] = f"error: {exc}"[:200]
                    failed.append(f"route {key}: {exc}")
            for gone in set(self.routes) - {str(k) for k in c.routes.objects}:
                del self.routes[gone]
            try:
                await self._delete_unwanted(wanted)
            except Exception as exc:
                failed.append(f"delete: {exc}")
            if failed:
                raise RuntimeError(f"{len(failed)} Gateway API write(s) failed: {failed[0]}")

    def _wanted(
        self, views: Mapping[PoolKey, ImportView]
    ) -> tuple[dict[PoolKey, tuple[RemoteBackend, str]], dict[str, str]]:
        """(namespace, Service name) → (backend, owner uid); and what was left out, and why."""
        wanted: dict[PoolKey, tuple[RemoteBackend, str]] = {}
        left_out: dict[str, str] = {}
        for key, view in sorted(views.items()):
            uid = _uid(self.cluster.imports.objects.get(key))
            if uid is None:
                continue  # no InferencePoolImport (yet): nothing to own them
            found = remote_backends(view, view.desired.here(self.own_cluster))
            for cluster, why in found.left_out.items():
                left_out[f"{key} {cluster}"] = why
            for b in found.remote:
                name = PoolKey(key.namespace, b.name)
                if name in wanted:
                    left_out[f"{key} {b.cluster}"] = f"Service name {b.name} already taken"
                    continue
                wanted[name] = (b, uid)
        return wanted, left_out

    def _mine(self, obj: Obj | None, b: RemoteBackend) -> bool | None:
        """None: absent; True: ours for this import; False: someone else's (never touched)."""
        if obj is None:
            return None
        return owned_by(obj) == b.key.name

    async def _ensure(self, b: RemoteBackend, uid: str) -> str | None:
        """Create or repair the backend's Service and EndpointSlice; why not, if a name is
        taken by an object we do not own."""
        ns, name = b.key.namespace, b.name
        service = self.cluster.services.objects.get(PoolKey(ns, name))
        mine = self._mine(service, b)
        if mine is False:
            return f"Service {ns}/{name} exists and is not ours"
        body = service_body(b, uid)
        if mine is None:
            if (why := await self._create(SERVICES, body, "services_created")) is not None:
                return why
        elif (patch := service_drift(service or {}, body)) is not None:
            await self._patch(SERVICES, ns, name, patch, "services_repaired")
        slice_obj = self.slices.objects.get(PoolKey(ns, name))
        mine = self._mine(slice_obj, b)
        if mine is False:
            return f"EndpointSlice {ns}/{name} exists and is not ours"
        body = endpoint_slice_body(b, uid)
        if slice_obj is not None and slice_obj.get("addressType") != body["addressType"]:
            await self._delete(ENDPOINT_SLICES, slice_obj)  # the address type is immutable
            slice_obj = None
        if slice_obj is None:
            if why := await self._create(ENDPOINT_SLICES, body, "endpointslices_created"):
                return why
        elif (patch := slice_drift(slice_obj, body)) is not None:
            await self._patch(ENDPOINT_SLICES, ns, name, patch, "endpointslices_repaired")
        return None

    async def _create(self, r: Resource, body: Obj, counter: str) -> str | None:
        """Create ``body``; why not, if the API refused it (it is not sent again unchanged)."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        key = (r.plural, PoolKey(ns, name))
        stamp = repr(sorted(body.items()))
        refused = self._refused.get(key)
        if refused is not None and refused[0] == stamp and time.monotonic() < refused[2]:
            return refused[1]
        try:
            created = await self.kube.create(r, ns, body)
        except Exception as exc:
            if is_status(exc, 409):  # someone else's (slices not ours are not in our cache)
                return f"{r.kind} {ns}/{name} exists and is not ours"
            if is_status(exc, 422):  # e.g. an address this API server does not allow
                why = f"the API refused {r.kind} {ns}/{name}: {status_message(exc)}"
                # Not resent unchanged for a while (an admission policy may be fixed later).
                self._refused[key] = (stamp, why, time.monotonic() + REFUSED_RETRY)
                self.counts[f"{r.plural}_refused"] += 1
                log.warning("gateway-api: %s", why)
                return why
            raise
        self._refused.pop(key, None)
        self._cache(r)[object_key(created)] = created
        self.counts[counter] += 1
        log.info("gateway-api: created %s %s/%s", r.kind, ns, name)
        return None

    async def _patch(self, r: Resource, ns: str, name: str, patch: Obj, counter: str) -> None:
        self._cache(r)[PoolKey(ns, name)] = await self.kube.patch(r, ns, name, patch)
        self.counts[counter] += 1
        log.info("gateway-api: repaired %s %s/%s: %s", r.kind, ns, name, sorted(patch))

    async def _delete(self, r: Resource, obj: Obj) -> None:
        key = object_key(obj)
        try:
            await self.kube.delete(r, *key, str(obj["metadata"].get("resourceVersion", "")))
        except Exception as exc:
            if not is_status(exc, 404):
                raise
        self._cache(r).pop(key, None)
        self.counts[f"{r.plural}_deleted"] += 1

    def _cache(self, r: Resource) -> dict[PoolKey, Obj]:
        return self.slices.objects if r == ENDPOINT_SLICES else self.cluster.services.objects

    def _named_by_routes(self) -> set[PoolKey]:
        """Services some HTTPRoute sends to: (namespace, name). A route the agent leaves alone
        (refused, every weight 0, a failed write) may still name one of ours. Read again after
        the route writes: what they dropped may go in the same sync."""
        return set().union(*map(services_named, self.cluster.routes.objects.values()))

    async def _delete_unwanted(self, wanted: Mapping[PoolKey, object]) -> None:
        named = self._named_by_routes()
        for r in (SERVICES, ENDPOINT_SLICES):
            for key, obj in sorted(self._cache(r).items()):
                if key in wanted or not is_owned(obj):
                    continue
                if key in named:
                    self.left_out[f"{key} (gone)"] = "kept: an HTTPRoute still sends to it"
                    continue
                await self._delete(r, obj)
                log.info("gateway-api: deleted %s %s (backend gone)", r.kind, key)

    # -- routes -------------------------------------------------------------------------------

    def _owned_names(self, ready: Mapping[PoolKey, list[RemoteBackend]]) -> dict[PoolKey, set[str]]:
        """Per import, the Services of ours a route may name: the ready ones, and those we own
        whose backend went away (their refs are dropped, not taken for someone else's)."""
        owned: dict[PoolKey, set[str]] = {}
        for (ns, name), obj in self.cluster.services.objects.items():
            if (pool := owned_by(obj)) is not None:
                owned.setdefault(PoolKey(ns, pool), set()).add(name)
        for key, found in ready.items():
            owned.setdefault(key, set()).update(b.name for b in found)
        # And those we owned before, which the garbage collector may have taken with their
        # import before the informer told us: a route naming one must still be put back.
        named = self._named_by_routes()
        for key, names in self._owned_before.items():
            still = {n for n in names if PoolKey(key.namespace, n) in named}
            owned.setdefault(key, set()).update(still)
        self._owned_before = {k: set(v) for k, v in owned.items()}
        return owned

    def _weights(self, views: Mapping[PoolKey, ImportView]) -> dict[PoolKey, dict[str, int]]:
        """What each import's annotation says (the import's own coalesced weights), where it
        names the view's backends; else the view's weights (a backend came or went, or this
        cluster's own pool changed its name from ``local`` to ours: not yet written)."""
        out = {}
        for key, view in views.items():
            obj = self.cluster.imports.objects.get(key) or {}
            held = written_weights((obj.get("metadata") or {}).get("annotations") or {})
            if held is None or set(held) != set(view.weights):
                held = view.weight_by_backend
            out[key] = held
        return out

    async def _apply_route(
        self,
        key: PoolKey,
        views: Mapping[PoolKey, ImportView],
        weights: Mapping[PoolKey, Mapping[str, int]],
        backends: Mapping[PoolKey, tuple[RemoteBackend, ...]],
        owned: Mapping[PoolKey, set[str]],
    ) -> None:
        for attempt in range(CONFLICT_RETRIES):
            route = self.cluster.routes.objects.get(key)
            if route is None or not is_marked(route):
                self.routes.pop(str(key), None)
                return
            plan = route_plan(
                route, views, weights, backends, owned,
                own_cluster=self.own_cluster, controller=self.controller,
            )  # fmt: skip
            if plan.refused is not None:
                reason, message = plan.refused
                said = f"refused: {reason}: {message}"
                if self.routes.get(str(key)) != said:
                    self.counts["routes_refused"] += 1
                    log.warning("gateway-api: leaving HTTPRoute %s alone: %s", key, said)
                self.routes[str(key)] = said
                return
            managed = f"managed: rule(s) {[r.index for r in plan.rules]}"
            self.routes[str(key)] = "; ".join([managed, *plan.notes])
            due = [r for r in plan.rules if not r.in_place]
            if not due:
                return
            version = str((route.get("metadata") or {}).get("resourceVersion", ""))
            try:
                patched = await self.kube.patch(
                    HTTPROUTES, *key, rule_patch(version, due), json_patch=True
                )
            except Exception as exc:
                # 409, or 422 from the failed `test`: someone wrote the route since we read it.
                if not is_status(exc, 409, 422) or attempt == CONFLICT_RETRIES - 1:
                    raise
                self.counts["route_conflicts"] += 1
                fresh = await self.kube.get(HTTPROUTES, *key)
                if (fresh.get("metadata") or {}).get("resourceVersion") == version:
                    raise  # not a race: the API refused the patch itself
                self.cluster.routes.objects[key] = fresh
                continue
            self.cluster.routes.objects[key] = patched
            self.counts["route_writes"] += 1
            return
