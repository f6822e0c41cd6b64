"""An emulated Kubernetes API server on loopback, for tests and the demo. Not a real API server.

No API server can be installed here, so the agent's real kube adapter (kubernetes-asyncio) talks
to this instead. It builds on kmock: its ``KubernetesScaffold`` gives the HTTP server, URL
parsing, discovery and the ``Status`` error format. kmock's own ``KubernetesEmulator`` is too
simple for a controller (every write is a dict merge; no resourceVersion, status subresource, 409
or 410), so this subclass keeps a small store with the real API's semantics for what the agent
uses, and nothing more:

- a global ``resourceVersion`` stamped on every write, ``uid``, ``creationTimestamp``,
  ``generation`` (bumped when anything outside ``metadata`` and ``status`` changes);
- PUT is a replace with optimistic concurrency (a stale ``metadata.resourceVersion`` → 409
  ``Conflict``); PATCH takes ``merge-patch+json`` and ``json-patch+json`` (a dict sent as a JSON
  patch is a 400, as on a real server);
- a status subresource: a write to the object ignores ``status``, a write to ``/status`` only
  changes ``status``; ``status`` in a create is dropped;
- namespaced objects need their namespace (404 ``namespaces "x" not found``);
- DELETE with ``preconditions`` (409 on a mismatch); no finalizers (the agent sets none);
- the garbage collector, in its background mode: deleting an object deletes, right after, every
  object whose last ``ownerReferences`` entry names its ``uid`` (and theirs in turn); one with
  other owners left only loses that entry;
- list returns the collection's ``resourceVersion``; watch resumes from a ``resourceVersion``
  out of a bounded history, answers an ``ERROR`` event with code 410 once that version is gone
  (``compact()`` forces it), sends ``BOOKMARK`` events when asked, honours ``timeoutSeconds``.

``interfere(...)`` lets a test make the next writes to an object lose a race: a foreign writer
really changes the object first, so the client's write carries a stale version and gets a genuine
409. Label and field selectors are not implemented (the agent uses neither).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import socket
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import jsonpatch
import kmock
from aiohttp import web

from federation.kit.kube_objects import (
    BOOKMARK_INTERVAL,
    HISTORY,
    ApiError,
    Kind,
    Obj,
    ObjKey,
    _now,
    _spec_part,
    merge_patch,
)


@attrs.define(kw_only=True)
class ApiEmulator(kmock.KubernetesScaffold):
    """The store and its HTTP semantics; serve it with ``kmock.Server(emulator)``."""

    kinds: dict[tuple[str, str, str], Kind] = attrs.field(factory=dict, init=False)
    store: dict[ObjKey, Obj] = attrs.field(factory=dict, init=False)
    namespaces: set[str] = attrs.field(factory=set, init=False)
    history: deque[tuple[int, str, str, Obj]] = attrs.field(
        factory=lambda: deque(maxlen=HISTORY), init=False
    )
    compacted_through: int = attrs.field(default=0, init=False)  # no resuming at or below
    revision: int = attrs.field(default=1, init=False)  # as etcd: an empty store is at 1
    writes: list[tuple[str, str, ObjKey]] = attrs.field(factory=list, init=False)  # for tests
    # (API group, resource[/subresource], RBAC verb) of every request served: what a client used
    verbs_used: set[tuple[str, str, str]] = attrs.field(factory=set, init=False)
    _versions: Iterator[int] = attrs.field(factory=lambda: itertools.count(2), init=False)
    _changed: asyncio.Condition = attrs.field(factory=asyncio.Condition, init=False)
    _interference: dict[ObjKey, int] = attrs.field(factory=dict, init=False)
    _epoch: int = attrs.field(default=0, init=False)  # bumped to end every open watch
    _watching: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)  # clear: held

    # -- set-up, used by tests and the demo --------------------------------------------------

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._watching.set()

    def register(self, *kinds: Kind) -> None:
        for k in kinds:
            self.kinds[(k.group, k.version, k.plural)] = k
            self.resources[kmock.resource(k.group, k.version, k.plural)] = kmock.ResourceInfo(
                kind=k.kind,
                namespaced=k.namespaced,
                subresources={"status"} if k.status_subresource else set(),
                verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            )

    def add_namespace(self, name: str) -> None:
        self.namespaces.add(name)

    def objects(self, plural: str) -> list[Obj]:
        return [copy.deepcopy(o) for (p, _, _), o in sorted(self.store.items()) if p == plural]

    def object_at(self, plural: str, namespace: str, name: str) -> Obj | None:
        obj = self.store.get((plural, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def interfere(self, plural: str, namespace: str, name: str, times: int = 1) -> None:
        """The next ``times`` conditional writes to this object (a PUT, DELETE or JSON patch that
        names the ``resourceVersion`` it read) lose a race to a foreign writer. Unconditional writes
        cannot lose one, so they pass untouched."""
        self._interference[(plural, namespace, name)] = times

    def compact(self) -> None:
        """Forget the watch history, as etcd compaction does: resuming answers 410 Gone."""
        self.compacted_through = self.revision
        self.history.clear()

    async def drop_watches(self, *, hold: bool = False) -> None:
        """End every open watch stream, as an API server restart does.

        With ``hold``, new watches wait until :meth:`resume_watches` (the server is still down),
        so a test can change and compact the store while every watcher is away.
        """
        async with self._changed:
            if hold:
                self._watching.clear()
            self._epoch += 1
            self._changed.notify_all()

    def resume_watches(self) -> None:
        self._watching.set()

    # -- direct writes (the test or demo acting as a user with kubectl) ---------------------

    async def put_object(self, kind: Kind, obj: Obj) -> Obj:
        """Create or replace ``obj`` whole (status included), as an admin would."""
        meta = obj.get("metadata", {})
        key = (kind.plural, meta.get("namespace", "") if kind.namespaced else "", meta["name"])
        async with self._changed:
            old = self.store.get(key)
            new = copy.deepcopy(obj)
            new.setdefault("apiVersion", kind.api_version)
            new.setdefault("kind", kind.kind)
            if old is None:
                self._stamp_new(new)
                return self._commit(kind, key, "ADDED", new)
            new["metadata"] = {**old["metadata"], **new.get("metadata", {})}
            new["metadata"].pop("resourceVersion", None)
            self._bump_generation(old, new)
            return self._commit(kind, key, "MODIFIED", new)

    async def delete_object(self, kind: Kind, namespace: str, name: str) -> None:
        key = (kind.plural, namespace if kind.namespaced else "", name)
        async with self._changed:
            old = self.store.pop(key, None)
            if old is not None:
                self._record(kind, "DELETED", old)
                self._collect_garbage(old)

    # -- the store's rules ------------------------------------------------------------------

    def _stamp_new(self, obj: Obj) -> None:
        meta = obj.setdefault("metadata", {})
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        meta.pop("resourceVersion", None)

    def _bump_generation(self, old: Obj, new: Obj) -> None:
        generation = old["metadata"].get("generation", 1)
        if _spec_part(old) != _spec_part(new):
            generation += 1
        new["metadata"]["generation"] = generation

    def _commit(self, kind: Kind, key: ObjKey, event: str, obj: Obj) -> Obj:
        self.revision = next(self._versions)
        obj["metadata"]["resourceVersion"] = str(self.revision)
        self.store[key] = obj
        self._record(kind, event, obj)
        return copy.deepcopy(obj)

    def _record(self, kind: Kind, event: str, obj: Obj) -> None:
        if event == "DELETED":
            self.revision = next(self._versions)
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self.revision)
        if len(self.history) == self.history.maxlen:
            self.compacted_through = self.history[0][0]
        self.history.append((self.revision, kind.plural, event, copy.deepcopy(obj)))
        self._changed.notify_all()

    def _interfere_if_asked(self, kind: Kind, key: ObjKey, conditional: bool) -> None:
        left = self._interference.get(key, 0)
        if not conditional or left <= 0 or key not in self.store:
            return
        self._interference[key] = left - 1
        foreign = copy.deepcopy(self.store[key])
        annotations = foreign["metadata"].setdefault("annotations", {})
        annotations["emulator.test/foreign-writes"] = str(
            int(annotations.get("emulator.test/foreign-writes", "0")) + 1
        )
        self._commit(kind, key, "MODIFIED", foreign)

    # -- HTTP -------------------------------------------------------------------------------

    async def _handle(self, request: Any) -> web.StreamResponse:
        res = request.resource
        kind = None
        if res is not None and res.plural:
            kind = self.kinds.get((res.group, res.version, res.plural))
        if kind is None:
            return await super()._handle(request)
        self._note_verb(kind, request)
        try:
            if request.method == "GET" and str(request.params.get("watch", "")).lower() in (
                "true",
                "1",
            ):
                return await self._watch(kind, request)
            status, body = await self._serve(kind, request)
        except ApiError as exc:
            status, body = exc.code, exc.status()
        return web.json_response(body, status=status)

    def _note_verb(self, kind: Kind, request: Any) -> None:
        watching = str(request.params.get("watch", "")).lower() in ("true", "1")
        verb = {
            "GET": "watch" if watching else "get" if request.name else "list",
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }.get(request.method, request.method.lower())
        resource = kind.plural + (f"/{request.subresource}" if request.subresource else "")
        self.verbs_used.add((kind.group, resource, verb))

    async def _serve(self, kind: Kind, request: Any) -> tuple[int, Obj]:
        ns = request.namespace or ""
        name, sub, method = request.name, request.subresource, request.method
        if sub not in (None, "status") or (sub == "status" and not kind.status_subresource):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if name is None:
            if method == "GET":
                return 200, self._list(kind, request.namespace)
            if method == "POST":
                return 201, await self._create(kind, ns, request.data)
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on a collection")
        key = (kind.plural, ns if kind.namespaced else "", name)
        if method == "GET":
            obj = self.store.get(key)
            if obj is None:
                raise self._not_found(kind, name)
            return 200, copy.deepcopy(obj)
        if method in ("PUT", "PATCH"):
            self.writes.append((method, sub or "", key))
            return 200, await self._update(kind, key, request, status_only=sub == "status")
        if method == "DELETE":
            self.writes.append((method, "", key))
            return 200, await self._delete(kind, key, request.data)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed")

    def _not_found(self, kind: Kind, name: str) -> ApiError:
        return ApiError(
            404,
            "NotFound",
            f'{kind.plural}.{kind.group} "{name}" not found',
            {"name": name, "group": kind.group, "kind": kind.plural},
        )

    def _list(self, kind: Kind, namespace: str | None) -> Obj:
        items = [
            copy.deepcopy(o)
            for (plural, ns, _), o in sorted(self.store.items())
            if plural == kind.plural and (namespace is None or ns == namespace)
        ]
        return {
            "apiVersion": kind.api_version,
            "kind": f"{kind.kind}List",
            "metadata": {"resourceVersion": str(self.revision)},
            "items": items,
        }

    async def _create(self, kind: Kind, ns: str, data: Any) -> Obj:
        if not isinstance(data, dict) or not isinstance(data.get("metadata"), dict):
            raise ApiError(400, "BadRequest", "the body must be an object with metadata")
        name = data["metadata"].get("name")
        if not name:
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        ns = ns or data["metadata"].get("namespace", "")
        if kind.namespaced and ns not in self.namespaces:
            raise ApiError(
                404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"}
            )
        key = (kind.plural, ns if kind.namespaced else "", name)
        async with self._changed:
            if key in self.store:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{kind.plural}.{kind.group} "{name}" already exists',
                    {"name": name, "group": kind.group, "kind": kind.plural},
                )
            obj = copy.deepcopy(data)
            obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
            if kind.namespaced:
                obj["metadata"]["namespace"] = ns
            if kind.status_subresource:
                obj.pop("status", None)
            self._stamp_new(obj)
            self.writes.append(("POST", "", key))
            return self._commit(kind, key, "ADDED", obj)

    async def _update(self, kind: Kind, key: ObjKey, request: Any, *, status_only: bool) -> Obj:
        async with self._changed:
            data = request.data if isinstance(request.data, dict) else {}
            tested = isinstance(request.data, list) and any(  # a JSON patch's precondition
                isinstance(op, dict)
                and op.get("op") == "test"
                and op.get("path") == "/metadata/resourceVersion"
                for op in request.data
            )
            self._interfere_if_asked(
                kind, key, tested or bool((data.get("metadata") or {}).get("resourceVersion"))
            )
            old = self.store.get(key)
            if old is None:
                raise self._not_found(kind, key[2])
            sent = self._apply_body(old, request)
            expected = (sent.get("metadata") or {}).get("resourceVersion")
            if expected and expected != old["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {kind.plural}.{kind.group} "{key[2]}": '
                    "the object has been modified; please apply your changes to the latest "
                    "version and try again",
                    {"name": key[2], "group": kind.group, "kind": kind.plural},
                )
            new = copy.deepcopy(old)
            if status_only:
                new["status"] = sent.get("status", {})
            else:
                new = {
                    k: v for k, v in sent.items() if k != "status" or not kind.status_subresource
                }
                if kind.status_subresource and "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                meta = dict(sent.get("metadata") or {})
                for fixed in ("uid", "creationTimestamp", "name", "namespace", "generation"):
                    if fixed in old["metadata"]:
                        meta[fixed] = old["metadata"][fixed]
                new["metadata"] = meta
                new["apiVersion"], new["kind"] = kind.api_version, kind.kind
            self._bump_generation(old, new)
            if new == old:
                return copy.deepcopy(old)  # a no-op write does not bump the version
            return self._commit(kind, key, "MODIFIED", new)

    def _apply_body(self, old: Obj, request: Any) -> Obj:
        body = request.data
        if request.method == "PUT":
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the body of a PUT must be an object")
            return copy.deepcopy(body)
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type == "application/json-patch+json":
            if not isinstance(body, list):
                raise ApiError(400, "BadRequest", "json: cannot unmarshal object into []Operation")
            try:
                patched: Obj = jsonpatch.apply_patch(old, body)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise ApiError(422, "Invalid", f"the JSON patch failed: {exc}") from exc
            return patched
        if content_type == "application/merge-patch+json":
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "a merge patch must be an object")
            merged: Obj = merge_patch(old, body)
            return merged
        raise ApiError(
            415, "UnsupportedMediaType", f"the media type {content_type!r} is not supported"
        )

    async def _delete(self, kind: Kind, key: ObjKey, body: Any) -> Obj:
        async with self._changed:
            pre = (body or {}).get("preconditions") or {} if isinstance(body, dict) else {}
            self._interfere_if_asked(kind, key, bool(pre.get("resourceVersion") or pre.get("uid")))
            old = self.store.get(key)
            if old is None:
                raise self._not_found(kind, key[2])
            for field, have in (
                ("resourceVersion", old["metadata"]["resourceVersion"]),
                ("uid", old["metadata"]["uid"]),
            ):
                if pre.get(field) and pre[field] != have:
                    raise ApiError(
                        409,
                        "Conflict",
                        f"Precondition failed: {field} in precondition: {pre[field]}, "
                        f"{field} in object meta: {have}",
                    )
            del self.store[key]
            self._record(kind, "DELETED", old)
            self._collect_garbage(old)
            return {"apiVersion": "v1", "kind": "Status", "status": "Success", "code": 200}

    def _collect_garbage(self, owner: Obj) -> None:
        """What Kubernetes' garbage collector does after ``owner`` is deleted: a dependent that
        it was the last owner of is deleted (and its own dependents in turn); one with other
        owners left only loses the reference."""
        uid = owner["metadata"].get("uid")
        by_plural = {k.plural: k for k in self.kinds.values()}
        for key, obj in list(self.store.items()):
            refs = [r for r in obj["metadata"].get("ownerReferences") or [] if isinstance(r, dict)]
            left = [r for r in refs if r.get("uid") != uid]
            if len(left) == len(refs):
                continue
            if left:
                kept = copy.deepcopy(obj)
                kept["metadata"]["ownerReferences"] = left
                self._commit(by_plural[key[0]], key, "MODIFIED", kept)
                continue
            del self.store[key]
            self._record(by_plural[key[0]], "DELETED", obj)
            self._collect_garbage(obj)

    # -- watch ------------------------------------------------------------------------------

    def _matches(self, kind: Kind, namespace: str | None, plural: str, obj: Obj) -> bool:
        if plural != kind.plural:
            return False
        return namespace is None or obj["metadata"].get("namespace") == namespace

    async def _watch(self, kind: Kind, request: Any) -> web.StreamResponse:
        namespace = request.namespace
        since = request.params.get("resourceVersion") or ""
        bookmarks = str(request.params.get("allowWatchBookmarks", "")).lower() in ("true", "1")
        timeout = float(request.params.get("timeoutSeconds") or 0) or None
        await self._watching.wait()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request._raw_request)

        async def send(events: Iterable[Obj]) -> None:
            for event in events:
                await response.write(json.dumps(event).encode() + b"\n")

        async with self._changed:
            if since in ("", "0"):
                cursor = self.revision
                initial = [
                    {"type": "ADDED", "object": copy.deepcopy(o)}
                    for (p, _, _), o in sorted(self.store.items())
                    if self._matches(kind, namespace, p, o)
                ]
            else:
                cursor = int(since)
                if cursor < self.compacted_through:
                    gone = ApiError(410, "Expired", f"too old resource version: {since}")
                    await send([{"type": "ERROR", "object": gone.status()}])
                    return response
                initial = []
        await send(initial)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        epoch = self._epoch
        while (deadline is None or loop.time() < deadline) and epoch == self._epoch:
            async with self._changed:
                events = [
                    {"type": event, "object": copy.deepcopy(obj)}
                    for rv, plural, event, obj in self.history
                    if rv > cursor and self._matches(kind, namespace, plural, obj)
                ]
                cursor = self.revision
                if not events:
                    wait = BOOKMARK_INTERVAL
                    if deadline is not None:
                        wait = min(wait, max(0.0, deadline - loop.time()))
                    try:
                        async with asyncio.timeout(wait):
                            await self._changed.wait()
                        continue
                    except TimeoutError:
                        pass
            if events:
                await send(events)
            elif bookmarks:
                mark = {
                    "kind": kind.kind,
                    "apiVersion": kind.api_version,
                    "metadata": {"resourceVersion": str(cursor)},
                }
                await send([{"type": "BOOKMARK", "object": mark}])
        return response


class EmulatedApiServer:
    """An emulator served on a random loopback port (the demo's and tests' API server).

    Served by aiohttp's low-level server rather than ``kmock.Server``, which also patches
    aiohttp's DNS resolver process-wide: several emulators (one per demo cluster) must not
    interfere with each other or with the agent's other HTTP clients.
    """

    def __init__(self, emulator: ApiEmulator, host: str = "127.0.0.1") -> None:
        self.emulator = emulator
        self._host = host
        self._runner: web.ServerRunner | None = None
        self.url = ""

    async def start(self) -> None:
        await self.emulator.__aenter__()
        self._runner = web.ServerRunner(web.Server(self.emulator), access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, 0))
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://{self._host}:{sock.getsockname()[1]}"

    async def stop(self) -> None:
        await self.emulator.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.emulator.__aexit__(None, None, None)
