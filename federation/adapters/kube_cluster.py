"""One Kubernetes cluster as the agent sees it: pools in, imports and export status out.

- :meth:`KubeCluster.watch` (a PoolSource): InferencePools, with their EPP Services and the
  HTTPRoutes/Gateways in front of them, from informers; the full set after every change.
- :meth:`KubeCluster.apply` (an ImportSink): InferencePoolImports (same namespace/name) with our
  ``status.controllers[]`` entry and the weights annotation. Creates what is missing, fixes what
  drifted, removes our entry where no import is desired and deletes the object when no other
  controller holds one. On start this is adoption: it runs against what already exists.
- :meth:`KubeCluster.apply_export_status`: each annotated pool's ``status.parents[]`` entry with
  the ``Exported`` condition; removed with the annotation.

Status goes through the status subresource with the ``resourceVersion`` we read (optimistic
concurrency); a 409 re-reads the object and tries again. Only our own entries are ever touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Final

from federation.adapters.kube import (
    GATEWAYS,
    HTTPROUTES,
    IMPORTS,
    POOLS,
    SERVICES,
    Informer,
    Kube,
    Obj,
    Resource,
    is_status,
    status_details,
)
from federation.model.coalescing import annotation_due
from federation.model.conditions import Condition
from federation.model.failures import explain
from federation.model.pool_objects import pool_from_object
from federation.model.pools import LocalPool, PoolKey
from federation.model.status_objects import (
    DEFAULT_CONTROLLER,
    has_other_controllers,
    import_controllers,
    is_ours,
    pool_parents,
)
from federation.model.views import ImportView, weights_annotation, written_weights

log = logging.getLogger(__name__)

CONFLICT_RETRIES: Final = 5
MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "federation"}


class KubeCluster:
    def __init__(
        self,
        kube: Kube,
        *,
        controller: str = DEFAULT_CONTROLLER,
        namespaces: Sequence[str] | None = None,
        backoff: Sequence[float] = (0.2, 0.5, 1.0, 2.0, 5.0),
        wall: Callable[[], float] = time.time,
        annotation_interval: float = 10.0,
        annotation_threshold: int = 50_000,
    ) -> None:
        self.kube = kube
        self.annotation_interval = annotation_interval
        self.annotation_threshold = annotation_threshold
        self._written_at: dict[PoolKey, float] = {}  # monotonic time of each weights write
        self._next_write: float | None = None  # the earliest coalesced write still owed
        self.controller = controller
        self.wall = wall
        self._pools_changed = asyncio.Event()
        self._imports_changed = asyncio.Event()
        self._wake = asyncio.Event()  # imports changed, or a nearer coalesced write is owed

        def informer(r: Resource, changed: asyncio.Event) -> Informer:
            return Informer(kube, r, namespaces=namespaces, backoff=backoff, on_change=changed.set)

        self.pools = informer(POOLS, self._pools_changed)
        self.services = informer(SERVICES, self._pools_changed)
        self.routes = informer(HTTPROUTES, self._pools_changed)
        self.gateways = informer(GATEWAYS, self._pools_changed)
        self.imports = Informer(
            kube, IMPORTS, namespaces=namespaces, backoff=backoff, on_change=self._on_imports
        )
        self.informers = [self.pools, self.services, self.routes, self.gateways, self.imports]
        self.refused: dict[PoolKey, str] = {}  # imports we could not create, and why
        self.counts: Counter[str] = Counter()  # writes, conflicts, errors, by kind
        self._desired: dict[PoolKey, ImportView] | None = None
        self._lock = asyncio.Lock()

    def _on_imports(self) -> None:
        self._imports_changed.set()
        self._wake.set()

    async def close(self) -> None:
        await self.kube.close()

    # -- running ----------------------------------------------------------------------------

    async def run(self) -> None:
        """The informers, and re-applying our imports when someone else changed them."""
        async with asyncio.TaskGroup() as tg:
            for informer in self.informers:
                tg.create_task(informer.run(), name=repr(informer))
            tg.create_task(self._repair_drift(), name="kube/repair-drift")

    async def wait_synced(self) -> None:
        await asyncio.gather(*(i.synced.wait() for i in self.informers))

    async def _repair_drift(self) -> None:
        """Re-apply on others' changes, and when a coalesced weights write comes due."""
        while True:
            wait = None if self._next_write is None else self._next_write - time.monotonic()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if wait is None else max(0.0, wait)):
                    await self._wake.wait()
            self._wake.clear()
            due = self._next_write is not None and time.monotonic() >= self._next_write
            if self._desired is None or not (self._imports_changed.is_set() or due):
                continue  # woken to wait for a nearer due time
            self._imports_changed.clear()
            try:
                await self._sync()
            except Exception as exc:  # the next change or the agent's next feed tries again
                log.warning("kube: repairing imports failed: %s", explain(exc))

    # -- pools in -----------------------------------------------------------------------------

    def local_pools(self) -> dict[PoolKey, LocalPool]:
        routes = list(self.routes.objects.values())
        return {
            key: pool_from_object(obj, self.services.objects, routes, self.gateways.objects)
            for key, obj in self.pools.objects.items()
        }

    async def watch(self) -> AsyncIterator[Mapping[PoolKey, LocalPool]]:
        await asyncio.gather(
            *(i.synced.wait() for i in (self.pools, self.services, self.routes, self.gateways))
        )
        while True:
            self._pools_changed.clear()
            yield self.local_pools()
            await self._pools_changed.wait()

    # -- imports out ---------------------------------------------------------------------------

    async def apply(self, views: Mapping[PoolKey, ImportView]) -> None:
        self._desired = dict(views)
        await self._sync()

    async def _sync(self) -> None:
        """Make the imports match the newest views. They are read under the lock: a drift
        repair queued behind a newer apply must not bring older views back."""
        await self.imports.synced.wait()
        async with self._lock:
            views = self._desired or {}
            self._next_write = None
            failed: list[str] = []
            for key in sorted(set(views) | set(self.imports.objects)):
                try:
                    await self._apply_import(key, views.get(key))
                except Exception as exc:  # one bad object must not block the others
                    self.counts["import_errors"] += 1
                    failed.append(f"{key}: {exc}")
            if failed:
                raise RuntimeError(f"{len(failed)} import(s) not applied: {failed[0]}")

    async def _apply_import(self, key: PoolKey, view: ImportView | None) -> None:
        obj = self.imports.objects.get(key)
        if view is None:
            self.refused.pop(key, None)
            if obj is not None and is_ours(obj, self.controller):
                await self._release_import(key, obj)
            return
        if obj is None:
            created = await self._create_import(key, view)
            if created is None:
                return
            obj = created
        self.refused.pop(key, None)
        await self._write_import_status(key, obj, view)
        await self._write_weights(key, obj, view)

    async def _create_import(self, key: PoolKey, view: ImportView) -> Obj | None:
        body = {
            "apiVersion": IMPORTS.api_version,
            "kind": IMPORTS.kind,
            "metadata": {
                "name": key.name,
                "namespace": key.namespace,
                "labels": dict(MANAGED_BY),
                "annotations": weights_annotation(view),
            },
        }
        try:
            created = await self.kube.create(IMPORTS, key.namespace, body)
        except Exception as exc:
            if is_status(exc, 404) and status_details(exc).get("kind") == "namespaces":
                if key not in self.refused:
                    self.counts["namespace_missing"] += 1
                    log.warning(
                        "kube: not importing %s: namespace %s does not exist in this cluster",
                        key,
                        key.namespace,
                    )
                self.refused[key] = "NamespaceMissing"
                return None
            if is_status(exc, 409):  # created meanwhile (another controller): adopt it
                return await self.kube.get(IMPORTS, *key)
            raise
        self.counts["imports_created"] += 1
        self._written_at[key] = time.monotonic()  # the annotation came with the object
        log.info("kube: created InferencePoolImport %s", key)
        return created

    async def _write_import_status(self, key: PoolKey, obj: Obj, view: ImportView) -> None:
        for attempt in range(CONFLICT_RETRIES):
            status = obj.get("status") or {}
            existing = status.get("controllers") or []
            wanted = import_controllers(
                existing, controller=self.controller, view=view, now=self.wall()
            )
            if wanted == existing:
                return
            body = copy.deepcopy(obj)
            body["status"] = {**status, "controllers": wanted}
            try:
                obj = await self.kube.replace_status(IMPORTS, *key, body)
                self.imports.objects[key] = obj
                self.counts["import_status_writes"] += 1
                return
            except Exception as exc:
                if not is_status(exc, 409) or attempt == CONFLICT_RETRIES - 1:
                    raise
                self.counts["conflicts"] += 1
                obj = await self.kube.get(IMPORTS, *key)

    async def _write_weights(self, key: PoolKey, obj: Obj, view: ImportView) -> None:
        """The weights annotation, coalesced (``model.coalescing``)."""
        have = (obj.get("metadata") or {}).get("annotations") or {}
        now = time.monotonic()
        due = annotation_due(
            written_weights(have),
            view.weight_by_backend,
            written_at=self._written_at.get(key),
            now=now,
            interval=self.annotation_interval,
            threshold=self.annotation_threshold,
        )
        if due is None:
            return
        if due > now:
            if self._next_write is None or due < self._next_write:
                self._next_write = due
                self._wake.set()  # the drift loop waits for the nearest due time
            self.counts["weights_writes_deferred"] += 1
            return
        wanted = weights_annotation(view)
        obj = await self.kube.patch(IMPORTS, *key, {"metadata": {"annotations": wanted}})
        self.imports.objects[key] = obj
        self._written_at[key] = now
        self.counts["weights_writes"] += 1

    async def _release_import(self, key: PoolKey, obj: Obj) -> None:
        """Remove our entry; delete the object if nobody else holds one (orphans included)."""
        for attempt in range(CONFLICT_RETRIES):
            try:
                if has_other_controllers(obj, self.controller):
                    status = obj.get("status") or {}
                    body = copy.deepcopy(obj)
                    body["status"] = {
                        **status,
                        "controllers": import_controllers(
                            status.get("controllers") or [],
                            controller=self.controller,
                            view=None,
                            now=self.wall(),
                        ),
                    }
                    self.imports.objects[key] = await self.kube.replace_status(IMPORTS, *key, body)
                    self.counts["import_entries_removed"] += 1
                else:
                    version = str(obj["metadata"]["resourceVersion"])
                    await self.kube.delete(IMPORTS, *key, version)
                    self.imports.objects.pop(key, None)
                    self._written_at.pop(key, None)
                    self.counts["imports_deleted"] += 1
                    log.info("kube: deleted InferencePoolImport %s", key)
                return
            except Exception as exc:
                if is_status(exc, 404):
                    self.imports.objects.pop(key, None)
                    return
                if not is_status(exc, 409) or attempt == CONFLICT_RETRIES - 1:
                    raise
                self.counts["conflicts"] += 1
                obj = await self.kube.get(IMPORTS, *key)

    # -- export status out ---------------------------------------------------------------------

    async def apply_export_status(self, conditions: Mapping[PoolKey, Condition | None]) -> None:
        """Set each pool's ``Exported`` condition (None: remove our entry)."""
        failed = 0
        for key, condition in sorted(conditions.items()):
            obj = self.pools.objects.get(key)
            if obj is None:
                continue
            try:
                await self._write_pool_status(key, obj, condition)
            except Exception as exc:
                failed += 1
                self.counts["pool_status_errors"] += 1
                log.warning(
                    "kube: writing status of InferencePool %s failed: %s", key, explain(exc)
                )
        if failed:
            raise RuntimeError(f"{failed} pool status write(s) failed")

    async def _write_pool_status(self, key: PoolKey, obj: Obj, condition: Condition | None) -> None:
        for attempt in range(CONFLICT_RETRIES):
            status = obj.get("status") or {}
            existing = status.get("parents") or []
            wanted = pool_parents(
                existing,
                key=key,
                controller=self.controller,
                condition=condition,
                generation=(obj.get("metadata") or {}).get("generation"),
                now=self.wall(),
            )
            if wanted == existing:
                return
            body = copy.deepcopy(obj)
            body["status"] = {**status, "parents": wanted}
            try:
                self.pools.objects[key] = await self.kube.replace_status(POOLS, *key, body)
                self.counts["pool_status_writes"] += 1
                return
            except Exception as exc:
                if is_status(exc, 404):
                    return  # the pool is gone: nothing to report on
                if not is_status(exc, 409) or attempt == CONFLICT_RETRIES - 1:
                    raise
                self.counts["conflicts"] += 1
                obj = await self.kube.get(POOLS, *key)


def dump_objects(objects: Mapping[PoolKey, Any]) -> dict[str, Any]:
    """``namespace.name`` → object, for ``--dump-objects``."""
    return {f"{k.namespace}.{k.name}": o for k, o in sorted(objects.items())}
