"""The Kubernetes API through kubernetes-asyncio: resources, raw-JSON calls, and informers.

Every object is handled as the JSON the API returns (a dict), so what the agent writes is exactly
what the CRD schemas describe. Custom resources go through ``CustomObjectsApi``; Services
through ``CoreV1Api``. An :class:`Informer` keeps a watched cache the way client-go does: list,
then watch from the list's ``resourceVersion`` with bookmarks; on ``410 Gone`` list again; on
any other error back off and resume from the last version seen.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from federation.adapters.kube_client import ApiException, Watch, client, config
from federation.model.failures import explain
from federation.model.pools import PoolKey

log = logging.getLogger(__name__)

Obj = dict[str, Any]
WATCH_TIMEOUT: Final = 300  # seconds per watch call; the server closes it, we resume
MERGE_PATCH: Final = "application/merge-patch+json"
JSON_PATCH: Final = "application/json-patch+json"


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


POOLS: Final = Resource("inference.networking.k8s.io", "v1", "inferencepools", "InferencePool")
IMPORTS: Final = Resource(
    "inference.networking.x-k8s.io", "v1alpha1", "inferencepoolimports", "InferencePoolImport"
)
SERVICES: Final = Resource("", "v1", "services", "Service")
HTTPROUTES: Final = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
GATEWAYS: Final = Resource("gateway.networking.k8s.io", "v1", "gateways", "Gateway")
# Built in, but under /apis/<group>/<version> like a custom resource: the generic calls reach it.
ENDPOINT_SLICES: Final = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")


def is_status(exc: BaseException, *codes: int) -> bool:
    return isinstance(exc, ApiException) and exc.status in codes


def _status_body(exc: BaseException) -> Mapping[str, Any]:
    """An API error's Status body ({} when there is none, or it is not JSON)."""
    body = getattr(exc, "body", None)
    try:
        status = json.loads(body) if body else None
    except (ValueError, TypeError):
        return {}
    return status if isinstance(status, Mapping) else {}


def status_details(exc: BaseException) -> Mapping[str, Any]:
    """The ``details`` of an API error's Status body ({} when there is none)."""
    details = _status_body(exc).get("details")
    return details if isinstance(details, Mapping) else {}


def status_message(exc: BaseException) -> str:
    """The ``message`` of an API error's Status body (the exception's text when there is none)."""
    message = _status_body(exc).get("message")
    return str(message or exc)[:300]


def url_client(url: str) -> client.ApiClient:
    """A client for an API server at ``url`` with no credentials (an emulator on loopback)."""
    return client.ApiClient(client.Configuration(host=url))


async def api_client(*, url: str | None = None, kubeconfig: str | None = None) -> client.ApiClient:
    """A client for ``url`` (an emulator, no auth), a kubeconfig, or the in-cluster account."""
    if url is not None:
        return url_client(url)
    configuration = client.Configuration()
    if kubeconfig:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


class Kube:
    """Raw-JSON calls for the resources the agent uses."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    async def close(self) -> None:
        await self.api.close()

    def _json(self, value: Any) -> Obj:
        data: Obj = self.api.sanitize_for_serialization(value)
        return data

    async def list(self, r: Resource, namespace: str | None) -> Obj:
        if r == SERVICES:
            if namespace is None:
                result = await self.core.list_service_for_all_namespaces()
            else:
                result = await self.core.list_namespaced_service(namespace)
            data = self._json(result)
            for item in data.get("items", []):  # typed lists drop these; the JSON has them
                item.setdefault("apiVersion", "v1")
                item.setdefault("kind", "Service")
            return data
        if namespace is None:
            listed: Obj = await self.custom.list_cluster_custom_object(r.group, r.version, r.plural)
        else:
            listed = await self.custom.list_namespaced_custom_object(
                r.group, r.version, namespace, r.plural
            )
        return listed

    def watch_call(
        self, r: Resource, namespace: str | None
    ) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if r == SERVICES:
            if namespace is None:
                return self.core.list_service_for_all_namespaces, ()
            return self.core.list_namespaced_service, (namespace,)
        if namespace is None:
            return self.custom.list_cluster_custom_object, (r.group, r.version, r.plural)
        return self.custom.list_namespaced_custom_object, (r.group, r.version, namespace, r.plural)

    async def get(self, r: Resource, namespace: str, name: str) -> Obj:
        if r == SERVICES:
            return self._service(await self.core.read_namespaced_service(name, namespace))
        got: Obj = await self.custom.get_namespaced_custom_object(
            r.group, r.version, namespace, r.plural, name
        )
        return got

    def _service(self, value: Any) -> Obj:
        data = self._json(value)
        data.setdefault("apiVersion", "v1")
        data.setdefault("kind", "Service")
        return data

    async def create(self, r: Resource, namespace: str, body: Obj) -> Obj:
        if r == SERVICES:
            return self._service(
                await self.core.create_namespaced_service(namespace, body)  # type: ignore[arg-type]
            )
        created: Obj = await self.custom.create_namespaced_custom_object(
            r.group, r.version, namespace, r.plural, body
        )
        return created

    async def replace_status(self, r: Resource, namespace: str, name: str, body: Obj) -> Obj:
        """PUT to ``/status``; ``body.metadata.resourceVersion`` makes it conditional (409)."""
        replaced: Obj = await self.custom.replace_namespaced_custom_object_status(
            r.group, r.version, namespace, r.plural, name, body
        )
        return replaced

    async def patch(
        self,
        r: Resource,
        namespace: str,
        name: str,
        patch: Obj | builtins.list[Obj],
        *,
        json_patch: bool = False,
    ) -> Obj:
        """A merge patch, or with ``json_patch`` an RFC 6902 one (a list of operations)."""
        content_type = JSON_PATCH if json_patch else MERGE_PATCH
        if r == SERVICES:
            patched_service = await self.core.patch_namespaced_service(
                name,
                namespace,
                patch,
                _content_type=content_type,  # type: ignore[call-arg]
            )
            return self._service(patched_service)
        patched: Obj = await self.custom.patch_namespaced_custom_object(
            r.group,
            r.version,
            namespace,
            r.plural,
            name,
            patch,
            _content_type=content_type,  # type: ignore[call-arg]
        )
        return patched

    async def delete(self, r: Resource, namespace: str, name: str, resource_version: str) -> None:
        """Delete only the version we looked at (409 if someone changed it since)."""
        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version=resource_version)
        )
        if r == SERVICES:
            await self.core.delete_namespaced_service(name, namespace, body=options)
            return
        await self.custom.delete_namespaced_custom_object(
            r.group,
            r.version,
            namespace,
            r.plural,
            name,
            body=options,
        )


def object_key(obj: Mapping[str, Any]) -> PoolKey:
    meta = obj.get("metadata") or {}
    return PoolKey(str(meta.get("namespace", "")), str(meta.get("name", "")))


class Informer:
    """A watched cache of one resource (all namespaces, or one per configured namespace)."""

    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        *,
        namespaces: Sequence[str] | None = None,
        backoff: Sequence[float] = (0.2, 0.5, 1.0, 2.0, 5.0),
        on_change: Callable[[], None] | None = None,
        keep: Callable[[Obj], bool] | None = None,
    ) -> None:
        self.kube = kube
        self.resource = resource
        # Only objects ``keep`` accepts are cached, and only their changes are told (one that
        # stops being kept is told as a removal).
        self._keep = keep or (lambda _obj: True)
        self.namespaces: Sequence[str | None] = list(namespaces) if namespaces else [None]
        self.backoff = backoff
        self.objects: dict[PoolKey, Obj] = {}
        self.synced = asyncio.Event()
        self.relists = 0  # how often a watch answered 410 and we listed again
        self.errors = 0
        self._listeners: list[Callable[[], None]] = [on_change] if on_change else []
        self._synced_scopes: set[str | None] = set()

    def __repr__(self) -> str:
        return f"Informer({self.resource.plural})"

    def listen(self, callback: Callable[[], None]) -> None:
        """Also call ``callback`` on every change (another part watching the same cache)."""
        self._listeners.append(callback)

    def _on_change(self) -> None:
        for callback in self._listeners:
            callback()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for ns in self.namespaces:
                tg.create_task(self._run_scope(ns), name=f"informer/{self.resource.plural}/{ns}")

    async def _run_scope(self, namespace: str | None) -> None:
        failures = 0
        version: str | None = None
        while True:
            try:
                if version is None:
                    version = await self._list(namespace)
                version = await self._watch(namespace, version)
                failures = 0
            except ApiException as exc:
                if exc.status == 410:
                    self.relists += 1
                    log.info("%s: resourceVersion %s expired (410); listing again", self, version)
                    version = None
                    continue
                failures += 1
                self.errors += 1
                log.warning("%s: API error %s %s; backing off", self, exc.status, exc.reason)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                failures += 1
                self.errors += 1
                log.warning("%s: connection error: %s; backing off", self, explain(exc))
            except Exception as exc:  # aiohttp client errors and the like: same treatment
                if isinstance(exc, asyncio.CancelledError):
                    raise
                failures += 1
                self.errors += 1
                log.warning("%s: %s; backing off", self, explain(exc))
            await asyncio.sleep(self.backoff[min(failures, len(self.backoff)) - 1])

    def _in_scope(self, key: PoolKey, namespace: str | None) -> bool:
        return namespace is None or key.namespace == namespace

    async def _list(self, namespace: str | None) -> str:
        listed = await self.kube.list(self.resource, namespace)
        fresh = {object_key(o): o for o in listed.get("items") or [] if self._keep(o)}
        for key in [k for k in self.objects if self._in_scope(k, namespace) and k not in fresh]:
            del self.objects[key]
        self.objects.update(fresh)
        self._synced_scopes.add(namespace)
        if len(self._synced_scopes) == len(self.namespaces):
            self.synced.set()
        self._on_change()
        return str((listed.get("metadata") or {}).get("resourceVersion") or "")

    async def _watch(self, namespace: str | None, version: str) -> str:
        func, args = self.kube.watch_call(self.resource, namespace)
        async with Watch() as watch:
            stream = watch.stream(
                func,
                *args,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_TIMEOUT,
            )
            async for event in stream:
                kind, obj = event["type"], event["raw_object"]
                meta = obj.get("metadata") or {}
                version = str(meta.get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                key = object_key(obj)
                if kind == "DELETED" or not self._keep(obj):
                    if self.objects.pop(key, None) is None:
                        continue  # never kept: nothing changed for us
                else:
                    self.objects[key] = obj
                self._on_change()
        return version
