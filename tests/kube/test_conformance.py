"""Conformance: every object the agent writes is valid under the upstream CRD schemas, and the
proposal's MUSTs hold (Exported parent entry of kind InferencePoolImport, same namespace/name,
True/False/removed with the annotation). Our own CRD accepts and rejects what upstream does.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from federation.kit.nats_servers import Supercluster
from federation.kit.sim.demo import Demo, DemoOptions
from federation.model.pools import PoolKey
from federation.model.status_objects import DEFAULT_CONTROLLER
from federation.model.views import WEIGHTS_ANNOTATION
from tests.conftest import running_demo, wait_for

REPO = Path(__file__).resolve().parents[2]
UPSTREAM = REPO.parent / "shared" / "upstream"
OURS = REPO / "deploy" / "crds" / "inferencepoolimports.yaml"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not UPSTREAM.is_dir(), reason=f"upstream CRDs not found at {UPSTREAM}"),
]


def schema_of(path: Path, version: str) -> dict[str, Any]:
    crd = yaml.safe_load(path.read_text())
    (v,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema: dict[str, Any] = v["schema"]["openAPIV3Schema"]
    return schema


def validator(path: Path, version: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(schema_of(path, version))


def errors(v: jsonschema.Draft7Validator, obj: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in v.iter_errors(obj)]


@pytest.fixture(scope="module")
def upstream_import() -> jsonschema.Draft7Validator:
    return validator(
        UPSTREAM / "inference.networking.x-k8s.io_inferencepoolimports.yaml", "v1alpha1"
    )


@pytest.fixture(scope="module")
def upstream_pool() -> jsonschema.Draft7Validator:
    return validator(UPSTREAM / "inference.networking.k8s.io_inferencepools.yaml", "v1")


def our_entry(pool: dict[str, Any]) -> dict[str, Any] | None:
    for entry in (pool.get("status") or {}).get("parents") or []:
        if entry.get("controllerName") == DEFAULT_CONTROLLER:
            return dict(entry)
    return None


def exported_condition(pool: dict[str, Any]) -> dict[str, Any] | None:
    entry = our_entry(pool)
    if entry is None:
        return None
    return next((c for c in entry["conditions"] if c["type"] == "Exported"), None)


async def test_written_objects_conform_and_musts_hold(
    supercluster: Supercluster,
    clusterset: str,
    upstream_import: jsonschema.Draft7Validator,
    upstream_pool: jsonschema.Draft7Validator,
) -> None:
    options = DemoOptions(clusters=3, pools=4, clusterset=clusterset)
    async with running_demo(options, supercluster) as demo:
        await demo.wait_converged(within=30)
        us_east = demo.clusters["us-east"]
        llama, unsupported = PoolKey("llm", "llama-3-70b"), PoolKey("llm", "phi-4")
        pools = us_east.pools.snapshot()
        assert pools[llama].export == "ClusterSet"
        await us_east.pools.put(dataclasses.replace(pools[unsupported], export="Everywhere"))

        def emulator_pool(key: PoolKey) -> dict[str, Any]:
            obj = us_east.apiserver.emulator.object_at("inferencepools", *key)
            assert obj is not None
            return obj

        def exported_true() -> bool:
            cond = exported_condition(emulator_pool(llama))
            return cond is not None and cond["status"] == "True"

        def not_supported() -> bool:
            cond = exported_condition(emulator_pool(unsupported))
            return cond is not None and cond["reason"] == "NotSupported"

        await wait_for(exported_true, within=20, what="Exported=True on an exported pool")
        await wait_for(not_supported, within=20, what="Exported=False/NotSupported")
        cond = exported_condition(emulator_pool(unsupported))
        assert cond is not None
        assert cond["status"] == "False"
        check_everything(demo, upstream_import, upstream_pool)

        # Annotation removed: our condition and our entry go.
        await us_east.pools.put(dataclasses.replace(pools[llama], export=None))
        await wait_for(
            lambda: our_entry(emulator_pool(llama)) is None,
            within=20,
            what="our parent entry to be removed with the annotation",
        )


def check_everything(
    demo: Demo,
    upstream_import: jsonschema.Draft7Validator,
    upstream_pool: jsonschema.Draft7Validator,
) -> None:
    ours = validator(OURS, "v1alpha1")
    checked = 0
    for name, sim in demo.clusters.items():
        emulator = sim.apiserver.emulator
        pools = {
            PoolKey(o["metadata"]["namespace"], o["metadata"]["name"]): o
            for o in emulator.objects("inferencepools")
        }
        imports = emulator.objects("inferencepoolimports")
        for obj in imports:
            assert errors(upstream_import, obj) == [], (name, obj["metadata"]["name"])
            assert errors(ours, obj) == [], (name, obj["metadata"]["name"])
            checked += 1
        for key, obj in pools.items():
            assert errors(upstream_pool, obj) == [], (name, key)
            entry = our_entry(obj)
            if entry is None:
                continue
            checked += 1
            # MUST: the parent entry names the InferencePoolImport of the same namespace/name.
            assert entry["parentRef"] == {
                "group": "inference.networking.x-k8s.io",
                "kind": "InferencePoolImport",
                "namespace": key.namespace,
                "name": key.name,
            }
            (cond,) = entry["conditions"]
            assert cond["type"] == "Exported"
            if cond["status"] == "True":
                # ...and the import of that name exists in every member cluster.
                for other in demo.clusters.values():
                    assert other.apiserver.emulator.object_at("inferencepoolimports", *key)
        # MUST: a pool without the annotation carries no entry of ours.
        for key, obj in pools.items():
            annotations = obj["metadata"].get("annotations") or {}
            if "inference.networking.x-k8s.io/export" not in annotations:
                assert our_entry(obj) is None, (name, key)
    assert checked > 10


BAD_IMPORTS = {
    "no controllers": {"status": {}},
    "nine controllers": {
        "status": {"controllers": [{"name": f"example.com/c{i}"} for i in range(9)]}
    },
    "controller name without a path": {"status": {"controllers": [{"name": "example.com"}]}},
    "bad reason": {
        "status": {
            "controllers": [
                {
                    "name": "example.com/c",
                    "conditions": [
                        {
                            "type": "Accepted",
                            "status": "True",
                            "reason": "not a reason!",
                            "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z",
                        }
                    ],
                }
            ]
        }
    },
    "bad status": {
        "status": {
            "controllers": [
                {
                    "name": "example.com/c",
                    "conditions": [
                        {
                            "type": "Accepted",
                            "status": "Maybe",
                            "reason": "X",
                            "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z",
                        }
                    ],
                }
            ]
        }
    },
    "empty cluster name": {
        "status": {"controllers": [{"name": "example.com/c", "exportingClusters": [{"name": ""}]}]}
    },
}


@pytest.mark.parametrize("case", sorted(BAD_IMPORTS))
def test_our_crd_rejects_what_upstream_rejects(
    case: str, upstream_import: jsonschema.Draft7Validator
) -> None:
    obj = {
        "apiVersion": "inference.networking.x-k8s.io/v1alpha1",
        "kind": "InferencePoolImport",
        "metadata": {"name": "x", "namespace": "y"},
        **BAD_IMPORTS[case],
    }
    assert errors(upstream_import, obj), "the upstream schema must reject this case"
    assert errors(validator(OURS, "v1alpha1"), obj), "so must ours"


def test_our_crd_names_match_upstream() -> None:
    ours = yaml.safe_load(OURS.read_text())
    upstream = yaml.safe_load(
        (UPSTREAM / "inference.networking.x-k8s.io_inferencepoolimports.yaml").read_text()
    )
    assert ours["metadata"]["name"] == upstream["metadata"]["name"]
    for field in ("group", "scope", "names"):
        assert ours["spec"][field] == upstream["spec"][field]
    (ov,), (uv,) = ours["spec"]["versions"], upstream["spec"]["versions"]
    assert (ov["name"], ov["subresources"]) == (uv["name"], uv["subresources"])


def k8s_errors(obj: dict[str, Any]) -> list[str]:
    """Errors of a built-in object under Kubernetes' own schemas (kubernetes-validate)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [str(exc)]
    return []


async def test_gateway_api_objects_conform_and_match_the_imports(
    supercluster: Supercluster, clusterset: str
) -> None:
    """The Gateway API feed in the demo: every HTTPRoute valid under the upstream CRD, every
    Service and EndpointSlice under Kubernetes' schemas; each marked route names exactly the
    import's backends (its own pool for the one here, one owned Service per remote one)."""
    routes_schema = validator(UPSTREAM / "gateway.networking.k8s.io_httproutes.yaml", "v1")
    options = DemoOptions(clusters=3, pools=4, clusterset=clusterset)
    async with running_demo(options, supercluster) as demo:
        await demo.wait_converged(within=30)

        def routes_follow_imports() -> bool:
            for sim in demo.clusters.values():
                emulator = sim.apiserver.emulator
                for imp in emulator.objects("inferencepoolimports"):
                    meta = imp["metadata"]
                    entry = imp["status"]["controllers"][0]
                    clusters = entry["exportingClusters"]
                    here = sim.name if sim.name in [c["name"] for c in clusters] else None
                    route = emulator.object_at("httproutes", meta["namespace"], meta["name"])
                    if route is None:
                        return False
                    refs = route["spec"]["rules"][0]["backendRefs"]
                    remote = sorted(c["name"] for c in clusters if c["name"] != here)
                    names = [f"{meta['name']}-fed-{c}" for c in remote]
                    if [r["name"] for r in refs[1:]] != names or "weight" not in refs[0]:
                        return False
                    # The same integers as the import's annotation, backend by backend.
                    held = json.loads(meta["annotations"][WEIGHTS_ANNOTATION])
                    inside = "local" if "local" in held else here
                    route_weights = {inside: refs[0]["weight"]} | {
                        c: r["weight"] for c, r in zip(remote, refs[1:], strict=True)
                    }
                    if {b: w for b, w in route_weights.items() if b} != held:
                        return False
            return True

        await wait_for(routes_follow_imports, within=30, what="routes naming every backend")
        checked = {"HTTPRoute": 0, "Service": 0, "EndpointSlice": 0}
        for name, sim in demo.clusters.items():
            emulator = sim.apiserver.emulator
            for route in emulator.objects("httproutes"):
                assert errors(routes_schema, route) == [], (name, route["metadata"]["name"])
                for ref in route["spec"]["rules"][0]["backendRefs"]:
                    assert 0 <= ref.get("weight", 1) <= 1_000_000
                checked["HTTPRoute"] += 1
            for plural, kind in (("services", "Service"), ("endpointslices", "EndpointSlice")):
                for obj in emulator.objects(plural):
                    if (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by"):
                        assert k8s_errors(obj) == [], (name, obj["metadata"]["name"])
                        checked[kind] += 1
        assert all(checked.values()), checked
