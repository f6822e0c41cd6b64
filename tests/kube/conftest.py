"""The Kubernetes API the kube tests run against: the emulator, or a real cluster via KUBECONFIG.

Tests act on the API as a user with kubectl would (``put``, ``delete``, ``get``) through an
:class:`ApiUnderTest`; the agent's adapter always goes through kubernetes-asyncio. Tests that
need what only an emulator can do (compaction, dropped watches, a forced lost race) take the
``emulator`` fixture instead and are not run against a real cluster.

Against a real cluster (``KUBECONFIG`` set), the CRDs of ``deploy/crds`` and the upstream
InferencePool and Gateway API CRDs must be installed; each test uses fresh namespaces, deleted
after it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import AsyncIterator
from typing import Any, Protocol

import pytest

from federation.adapters.kube import Kube, Resource, api_client
from federation.adapters.kube_client import client
from federation.kit.kube_emulator import ApiEmulator, EmulatedApiServer
from federation.kit.kube_kinds import EMULATED, new_emulator

_names = itertools.count()
Obj = dict[str, Any]


class ApiUnderTest(Protocol):
    namespace: str  # a namespace that exists, fresh for the test

    async def kube(self) -> Kube: ...

    async def put(self, r: Resource, obj: Obj) -> Obj: ...

    async def delete(self, r: Resource, namespace: str, name: str) -> None: ...

    async def get(self, r: Resource, namespace: str, name: str) -> Obj | None: ...


class Emulated:
    def __init__(self, emulator: ApiEmulator, url: str, namespace: str) -> None:
        self.emulator, self.url, self.namespace = emulator, url, namespace
        self._clients: list[Kube] = []

    async def kube(self) -> Kube:
        kube = Kube(await api_client(url=self.url))
        self._clients.append(kube)
        return kube

    def _kind(self, r: Resource) -> Any:
        return next(k for k in EMULATED if k.plural == r.plural)

    async def put(self, r: Resource, obj: Obj) -> Obj:
        return await self.emulator.put_object(self._kind(r), obj)

    async def delete(self, r: Resource, namespace: str, name: str) -> None:
        await self.emulator.delete_object(self._kind(r), namespace, name)

    async def get(self, r: Resource, namespace: str, name: str) -> Obj | None:
        return self.emulator.object_at(r.plural, namespace, name)

    async def close(self) -> None:
        for kube in self._clients:
            await kube.close()


class RealCluster:
    """A real API server from KUBECONFIG. Not exercised on this project's CI (none can run)."""

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        self.kubeconfig, self.namespace = kubeconfig, namespace
        self._clients: list[Kube] = []

    async def kube(self) -> Kube:
        kube = Kube(await api_client(kubeconfig=self.kubeconfig))
        self._clients.append(kube)
        return kube

    async def start(self) -> None:
        admin = await self.kube()
        await admin.core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace))
        )

    async def put(self, r: Resource, obj: Obj) -> Obj:
        admin = self._clients[0]
        meta = obj["metadata"]
        body = {"apiVersion": r.api_version, "kind": r.kind, **obj}
        status = body.pop("status", None)
        if r.group == "":
            current = await self.get(r, meta["namespace"], meta["name"])
            if current is None:
                await admin.core.create_namespaced_service(meta["namespace"], body)
            else:
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                await admin.core.replace_namespaced_service(meta["name"], meta["namespace"], body)
            got = await self.get(r, meta["namespace"], meta["name"])
            assert got is not None
            return got
        current = await self.get(r, meta["namespace"], meta["name"])
        if current is None:
            written = await admin.create(r, meta["namespace"], body)
        else:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            written = await admin.custom.replace_namespaced_custom_object(
                r.group, r.version, meta["namespace"], r.plural, meta["name"], body
            )
        if status is not None:
            written["status"] = status
            written = await admin.replace_status(r, meta["namespace"], meta["name"], written)
        return written

    async def delete(self, r: Resource, namespace: str, name: str) -> None:
        admin = self._clients[0]
        with contextlib.suppress(client.ApiException):
            if r.group == "":
                await admin.core.delete_namespaced_service(name, namespace)
            else:
                await admin.custom.delete_namespaced_custom_object(
                    r.group, r.version, namespace, r.plural, name
                )

    async def get(self, r: Resource, namespace: str, name: str) -> Obj | None:
        admin = self._clients[0]
        try:
            if r.group == "":
                svc = await admin.core.read_namespaced_service(name, namespace)
                data: Obj = admin.api.sanitize_for_serialization(svc)
                return data
            return await admin.get(r, namespace, name)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def close(self) -> None:
        with contextlib.suppress(client.ApiException):
            await self._clients[0].core.delete_namespace(self.namespace)
        for kube in self._clients:
            await kube.close()


@contextlib.asynccontextmanager
async def emulated_api(*namespaces: str) -> AsyncIterator[Emulated]:
    server = EmulatedApiServer(new_emulator(namespaces or ("default",)))
    await server.start()
    api = Emulated(server.emulator, server.url, (namespaces or ("default",))[0])
    try:
        yield api
    finally:
        await api.close()
        await server.stop()


BACKENDS = ["emulator"] + (["kubeconfig"] if os.environ.get("KUBECONFIG") else [])


@pytest.fixture(params=BACKENDS)
async def api(request: pytest.FixtureRequest) -> AsyncIterator[ApiUnderTest]:
    """The API server under test: the emulator always; a real cluster when KUBECONFIG is set."""
    namespace = f"fed-test-{os.getpid()}-{next(_names)}"
    if request.param == "emulator":
        async with emulated_api(namespace) as emulated:
            yield emulated
        return
    real = RealCluster(os.environ["KUBECONFIG"], namespace)
    await real.start()
    try:
        yield real
    finally:
        await real.close()


@pytest.fixture
async def emulator() -> AsyncIterator[Emulated]:
    """The emulator only: for tests of compaction, dropped watches and forced lost races."""
    async with emulated_api("llm") as emulated:
        yield emulated
