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
import contextlib
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
)
from federation.adapters.kube_cluster import CONFLICT_RETRIES, KubeCluster
from federation.model.backend_services import (
    RemoteBackend,
    endpoint_slice_body,
    is_owned,
    remote_backends,
    service_body,
    service_drift,
    slice_drift,
)
from federation.model.coalescing import annotation_due
from federation.model.pools import PoolKey
from federation.model.route_weights import RuleWeights, is_marked, route_plan, rule_patch
from federation.model.views import ImportView

log = logging.getLogger(__name__)

RouteRule = tuple[PoolKey, int]  # (route, rule index)
LEFT_OUT_SHOWN: Final = 50  # notes per kind in status: enough to see a pattern, never a flood


def _owner_name(obj: Mapping[str, Any]) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller") is True:
            name = ref.get("name")
            return name if isinstance(name, str) else None
    return None


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
        interval: float = 10.0,
        threshold: int = 50_000,
    ) -> None:
        self.cluster = cluster
        self.kube = cluster.kube
        self.own_cluster = own_cluster
        self.controller = controller
        self.interval, self.threshold = interval, threshold
        self._wake = asyncio.Event()  # objects changed, or a nearer coalesced write is owed
        self._changed = False  # objects changed (maybe someone else's edit: repair it)
        self.slices = Informer(
            self.kube, ENDPOINT_SLICES, namespaces=namespaces, backoff=backoff,
            on_change=self._on_change,
        )  # fmt: skip
        for informer in (cluster.services, cluster.routes, cluster.imports):
            informer.listen(self._on_change)
        self.counts: Counter[str] = Counter()
        self.routes: dict[str, str] = {}  # marked route → what the agent does with it
        self.left_out: dict[str, str] = {}  # "ns/pool cluster" → why it has no Service
        self._written_at: dict[RouteRule, float] = {}
        self._next_write: float | None = None
        self._desired: dict[PoolKey, ImportView] | None = None
        self._lock = asyncio.Lock()

    # -- running ------------------------------------------------------------------------------

    def _on_change(self) -> None:
        self._changed = True
        self._wake.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.slices.run(), name="gateway-api/endpointslices")
            tg.create_task(self._repair(), name="gateway-api/repair")

    async def _repair(self) -> None:
        while True:
            wait = None if self._next_write is None else self._next_write - time.monotonic()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if wait is None else max(0.0, wait)):
                    await self._wake.wait()
            self._wake.clear()
            due = self._next_write is not None and time.monotonic() >= self._next_write
            if self._desired is None or not (self._changed or due):
                continue  # woken to wait for a nearer due time
            self._changed = False
            try:
                await self._sync()
            except Exception as exc:  # the next change or the agent's next feed tries again
                log.warning("gateway-api: repairing failed: %s", exc)

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
            self._next_write = None
            failed: list[str] = []
            wanted, left_out = self._wanted(views)
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
            for key in sorted(c.routes.objects):
                try:
                    await self._apply_route(key, views, backends, wanted)
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
        return is_owned(obj) and _owner_name(obj) == b.key.name

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
            await self._create(SERVICES, body, "services_created")
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
            await self._create(ENDPOINT_SLICES, body, "endpointslices_created")
        elif (patch := slice_drift(slice_obj, body)) is not None:
            await self._patch(ENDPOINT_SLICES, ns, name, patch, "endpointslices_repaired")
        return None

    async def _create(self, r: Resource, body: Obj, counter: str) -> None:
        ns = body["metadata"]["namespace"]
        try:
            created = await self.kube.create(r, ns, body)
        except Exception as exc:
            if is_status(exc, 409):  # created meanwhile: the informer shows it to the retry
                raise RuntimeError(
                    f"{r.kind} {ns}/{body['metadata']['name']} appeared meanwhile"
                ) from exc
            raise
        self._cache(r)[object_key(created)] = created
        self.counts[counter] += 1
        log.info("gateway-api: created %s %s/%s", r.kind, ns, body["metadata"]["name"])

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

    async def _delete_unwanted(self, wanted: Mapping[PoolKey, object]) -> None:
        for r in (SERVICES, ENDPOINT_SLICES):
            for key, obj in sorted(self._cache(r).items()):
                if key not in wanted and is_owned(obj):
                    await self._delete(r, obj)
                    log.info("gateway-api: deleted %s %s (backend gone)", r.kind, key)

    # -- routes -------------------------------------------------------------------------------

    async def _apply_route(
        self,
        key: PoolKey,
        views: Mapping[PoolKey, ImportView],
        backends: Mapping[PoolKey, tuple[RemoteBackend, ...]],
        wanted: Mapping[PoolKey, tuple[RemoteBackend, str]],
    ) -> None:
        owned: dict[PoolKey, set[str]] = {}
        for (ns, name), obj in self.cluster.services.objects.items():
            if is_owned(obj) and (pool := _owner_name(obj)) is not None:
                owned.setdefault(PoolKey(ns, pool), set()).add(name)
        for (_, name), (b, _) in wanted.items():
            owned.setdefault(b.key, set()).add(name)
        for attempt in range(CONFLICT_RETRIES):
            route = self.cluster.routes.objects.get(key)
            if route is None or not is_marked(route):
                self.routes.pop(str(key), None)
                return
            plan = route_plan(
                route, views, backends, owned,
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
            due = self._due_rules(key, plan.rules)
            managed = f"managed: rule(s) {[r.index for r in plan.rules]}"
            self.routes[str(key)] = "; ".join([managed, *plan.notes])
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
            now = time.monotonic()
            for r in due:
                self._written_at[(key, r.index)] = now
            self.counts["route_writes"] += 1
            return

    def _due_rules(self, key: PoolKey, rules: tuple[RuleWeights, ...]) -> list[RuleWeights]:
        now = time.monotonic()
        due = []
        for r in rules:
            if r.in_place:
                continue
            when: float | None = now
            # Only weights moved: at the annotation's coalesced rate, unless the rule serves
            # nothing now (all at 0) and could.
            if r.written is not None and any(r.written.values()):
                when = annotation_due(
                    r.written,
                    r.wanted,
                    written_at=self._written_at.get((key, r.index)),
                    now=now,
                    interval=self.interval,
                    threshold=self.threshold,
                )
            if when is None:
                continue
            if when > now:
                self.counts["route_writes_deferred"] += 1
                if self._next_write is None or when < self._next_write:
                    self._next_write = when
                    self._wake.set()
                continue
            due.append(r)
        return due
