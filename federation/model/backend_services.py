"""Remote backends as ordinary Kubernetes Services: what the Gateway API feed owns per import.

For each import and each remote exporting cluster that exports parent Gateway addresses, the
agent owns one selector-less ``Service`` and one ``EndpointSlice`` (the way MCS implementations
expose an imported service), in the import's namespace, so that any Gateway API implementation
can route to that cluster through an ordinary ``HTTPRoute`` ``backendRef``:

- name: ``<pool>-fed-<cluster>`` when that is a valid Service name (a DNS-1035 label of at most
  63 characters); otherwise the name lowercased with every other character as ``-``, cut to 54
  characters and followed by ``-`` and 8 hex digits of SHA-256 over ``<pool>/<cluster>``, so that
  long or dotted names stay unique (:func:`backend_service_name`);
- labels ``app.kubernetes.io/managed-by: federation`` and ``kubernetes.io/service-name`` (on the
  slice); annotations naming the import and the cluster; a controller ``ownerReference`` to the
  ``InferencePoolImport``, so Kubernetes' garbage collector removes them with it;
- ports: the remote Gateways' listener port; endpoints: their addresses (one address type per
  slice: IPv4 first, then IPv6, then host names; the others are left out and said so).

Pure and defensive: addresses come from other clusters' events, so each one is checked again
here; an unspecified, link-local or multicast address (a cloud metadata endpoint, say, also
written as IPv4-mapped IPv6) is refused and reported, never written. Loopback is left to the
API server to judge (a real one refuses it with 422, which the feed reports once and does not
resend; the demo's emulator takes it).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from federation.messages import EndpointAddress
from federation.model.pools import PoolKey
from federation.model.raw_json import as_list as _list
from federation.model.raw_json import as_mapping as _dict
from federation.model.views import ImportView

MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "federation"}
SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
SLICE_MANAGER_LABEL: Final = "endpointslice.kubernetes.io/managed-by"
SLICE_MANAGER: Final = "inference-federation.io-agent"
IMPORT_ANNOTATION: Final = "inference-federation.io/import"
CLUSTER_ANNOTATION: Final = "inference-federation.io/cluster"
IMPORT_API_VERSION: Final = "inference.networking.x-k8s.io/v1alpha1"
IMPORT_KIND: Final = "InferencePoolImport"
PORT_NAME: Final = "http"

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")

Obj = dict[str, Any]


def backend_service_name(pool: str, cluster: str) -> str:
    """The Service (and EndpointSlice) name of ``cluster``'s backend of the import ``pool``."""
    plain = f"{pool}-fed-{cluster}"
    if _DNS1035.match(plain):
        return plain
    cleaned = re.sub(r"[^a-z0-9-]", "-", plain.lower())
    if not cleaned[:1].isalpha():
        cleaned = "fed-" + cleaned
    digest = hashlib.sha256(f"{pool}/{cluster}".encode()).hexdigest()[:8]
    return f"{cleaned[:54].rstrip('-')}-{digest}"


def endpoint_address(host: str) -> tuple[str, str] | None:
    """(``addressType``, the address as written) for ``host``; None when it must not be an
    endpoint. IPv4-mapped IPv6 addresses are their IPv4 address (else ``::ffff:169.254.169.254``
    would pass for IPv6), IP literals are written in canonical form, and a host name needs a dot
    (as the API requires of an FQDN endpoint)."""
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host)
    except ValueError:
        if len(host) <= 253 and "." in host and _HOSTNAME.match(host):
            return "FQDN", host
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified or ip.is_link_local or ip.is_multicast:
        return None
    return ("IPv4" if ip.version == 4 else "IPv6"), str(ip)


def address_type(host: str) -> str | None:
    """The EndpointSlice ``addressType`` of ``host``; None when it must not be an endpoint."""
    found = endpoint_address(host)
    return found[0] if found else None


@dataclass(frozen=True)
class RemoteBackend:
    """One remote cluster's backend of one import, as a Service and an EndpointSlice."""

    key: PoolKey  # the import
    cluster: str
    name: str  # of the Service and the EndpointSlice
    port: int
    address_type: str
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class Backends:
    """Every remote backend of one import, and what was left out (backend → why)."""

    remote: tuple[RemoteBackend, ...]
    left_out: Mapping[str, str]


def remote_backends(view: ImportView, here: str | None) -> Backends:
    """The remote backends of ``view`` that have usable parent Gateway addresses."""
    remote, left_out = [], {}
    for cluster in view.desired.exporting_clusters:
        if cluster == here:
            continue
        backend, why = _backend(view.key, cluster, view.parent_addresses(cluster))
        if backend is not None:
            remote.append(backend)
        if why:
            left_out[cluster] = why
    return Backends(tuple(remote), left_out)


def _backend(
    key: PoolKey, cluster: str, addresses: tuple[EndpointAddress, ...]
) -> tuple[RemoteBackend | None, str]:
    if not addresses:
        return None, "no parent Gateway address"
    by_type: dict[tuple[str, int], list[str]] = {}
    refused = []
    for a in addresses:
        found = endpoint_address(a.host)
        if found is None or not 0 < a.port < 65536:
            refused.append(f"{a.host}:{a.port}")
            continue
        kind, host = found
        hosts = by_type.setdefault((kind, a.port), [])
        if host not in hosts:
            hosts.append(host)
    why = f"refused address(es) {', '.join(refused[:3])}" if refused else ""
    if not by_type:
        return None, why
    order = {"IPv4": 0, "IPv6": 1, "FQDN": 2}
    (kind, port), hosts = min(by_type.items(), key=lambda kv: (order[kv[0][0]], -len(kv[1])))
    if len(by_type) > 1:
        why = "; ".join(filter(None, [why, f"only {kind} addresses on port {port} are used"]))
    name = backend_service_name(key.name, cluster)
    return RemoteBackend(key, cluster, name, port, kind, tuple(sorted(hosts))), why


def owner_reference(key: PoolKey, uid: str) -> Obj:
    return {
        "apiVersion": IMPORT_API_VERSION,
        "kind": IMPORT_KIND,
        "name": key.name,
        "uid": uid,
        "controller": True,
    }


def _metadata(b: RemoteBackend, owner_uid: str, labels: Mapping[str, str]) -> Obj:
    return {
        "name": b.name,
        "namespace": b.key.namespace,
        "labels": {**MANAGED_BY, **labels},
        "annotations": {IMPORT_ANNOTATION: b.key.name, CLUSTER_ANNOTATION: b.cluster},
        "ownerReferences": [owner_reference(b.key, owner_uid)],
    }


def service_ports(b: RemoteBackend) -> list[Obj]:
    # Every defaulted field written out, so the stored object equals what we compare against.
    return [{"name": PORT_NAME, "port": b.port, "protocol": "TCP", "targetPort": b.port}]


def service_body(b: RemoteBackend, owner_uid: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(b, owner_uid, {}),
        "spec": {"type": "ClusterIP", "ports": service_ports(b)},
    }


def slice_content(b: RemoteBackend) -> Obj:
    return {
        "addressType": b.address_type,
        "endpoints": [{"addresses": [h], "conditions": {"ready": True}} for h in b.hosts],
        "ports": [{"name": PORT_NAME, "port": b.port, "protocol": "TCP"}],
    }


def endpoint_slice_body(b: RemoteBackend, owner_uid: str) -> Obj:
    labels = {SERVICE_NAME_LABEL: b.name, SLICE_MANAGER_LABEL: SLICE_MANAGER}
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": _metadata(b, owner_uid, labels),
        **slice_content(b),
    }


def owned_by(obj: Mapping[str, Any]) -> str | None:
    """The InferencePoolImport that owns ``obj`` for us (our label and a controller reference
    to an import), by name; None when the object is not ours (never others')."""
    meta = _dict(obj.get("metadata"))
    labels = _dict(meta.get("labels"))
    if any(labels.get(k) != v for k, v in MANAGED_BY.items()):
        return None
    for ref in map(_dict, _list(meta.get("ownerReferences"))):
        if (
            ref.get("controller") is True
            and ref.get("kind") == IMPORT_KIND
            and str(ref.get("apiVersion", "")).startswith("inference.networking.x-k8s.io/")
        ):
            name = ref.get("name")
            return name if isinstance(name, str) else None
    return None


def is_owned(obj: Mapping[str, Any]) -> bool:
    return owned_by(obj) is not None


def metadata_drift(have: Mapping[str, Any], want: Obj) -> Obj | None:
    """A merge patch for the metadata fields we own that differ; None if none do."""
    meta = _dict(have.get("metadata"))
    patch: Obj = {}
    for field in ("labels", "annotations"):
        held = _dict(meta.get(field))
        wrong = {k: v for k, v in want["metadata"][field].items() if held.get(k) != v}
        if wrong:
            patch[field] = wrong
    if meta.get("ownerReferences") != want["metadata"]["ownerReferences"]:
        patch["ownerReferences"] = want["metadata"]["ownerReferences"]
    return patch or None


def service_drift(have: Mapping[str, Any], want: Obj) -> Obj | None:
    """A merge patch repairing what we own of a Service (ports, no selector, metadata)."""
    spec = _dict(have.get("spec"))
    patch: Obj = {}
    if (meta := metadata_drift(have, want)) is not None:
        patch["metadata"] = meta
    spec_patch: Obj = {}
    if spec.get("ports") != want["spec"]["ports"]:
        spec_patch["ports"] = want["spec"]["ports"]
    if spec.get("selector"):
        spec_patch["selector"] = None  # selector-less: the endpoints are ours
    if spec_patch:
        patch["spec"] = spec_patch
    return patch or None


def slice_drift(have: Mapping[str, Any], want: Obj) -> Obj | None:
    """A merge patch repairing what we own of an EndpointSlice (its address type is immutable:
    a change of type is a delete and a create, which the caller does on ``addressType``)."""
    patch: Obj = {}
    if (meta := metadata_drift(have, want)) is not None:
        patch["metadata"] = meta
    for field in ("endpoints", "ports"):
        if have.get(field) != want[field]:
            patch[field] = want[field]
    return patch or None
