"""Kubernetes objects → :class:`LocalPool`: what an export needs, read from the API's JSON.

Pure and defensive: every object here was written by someone else, so each field is checked
for its type and range, and a pool that cannot be exported as it stands gets ``invalid`` with a
status reason instead of an exception. Resolution, as the issue asks:

- the EPP address: the ``endpointPickerRef`` Service's LoadBalancer ingress, else its ClusterIP,
  at ``endpointPickerRef.port.number``; the annotation ``inference-federation.io/epp-address``
  (``host:port``) overrides it per pool;
- the EPP's metrics: ``inference-federation.io/epp-metrics-url``, else port 9090 (the EPP's
  default metrics port) of the Service's ClusterIP;
- parent gateways (Parent mode): Gateways named in the ``parentRefs`` of HTTPRoutes whose
  ``backendRefs`` point at this pool, with the addresses from the Gateway's status — except
  routes marked for weights (``inference-federation.io/route-weights``): those spill to other
  clusters, and a request peers forward must be served here, never forwarded again;
- model identity (a conflict field): the annotation ``inference-federation.io/model``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from federation.messages import EndpointAddress, ParentGateway
from federation.model.pools import EXPORT_ANNOTATION, LocalPool, PoolKey
from federation.model.raw_json import as_list as _list
from federation.model.raw_json import as_mapping as _dict

POOL_GROUP: Final = "inference.networking.k8s.io"
# An HTTPRoute whose weights the agent writes (model.route_weights): client-facing, it spills to
# other clusters, so its Gateways are never a pool's parent (where peers forward to).
ROUTE_LABEL: Final = "inference-federation.io/route-weights"
EPP_ADDRESS_ANNOTATION: Final = "inference-federation.io/epp-address"
METRICS_URL_ANNOTATION: Final = "inference-federation.io/epp-metrics-url"
MODEL_ANNOTATION: Final = "inference-federation.io/model"
EPP_METRICS_PORT: Final = 9090
MAX_ANNOTATION_CHARS: Final = 253  # longer values of ours are hostile, not addresses or names

_HOST = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9.:]{0,251}[A-Za-z0-9])?$")  # DNS name, IPv4, IPv6
_MODEL = re.compile(r"^[\w./:@+-]{1,253}$")

Obj = Mapping[str, Any]
Index = Mapping[PoolKey, Obj]  # (namespace, name) → object


def _port(value: Any) -> int | None:
    return (
        value
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536
        else None
    )


def parse_address(value: str) -> EndpointAddress | None:
    """``host:port`` (``[v6]:port`` for IPv6) → an address; None if it is not one."""
    if len(value) > MAX_ANNOTATION_CHARS:
        return None
    host, sep, port_text = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not port_text.isdigit() or not _HOST.match(host):
        return None
    port = _port(int(port_text))
    return EndpointAddress(host=host, port=port) if port else None


def _service_host(service: Obj) -> tuple[str | None, str | None]:
    """(external host, cluster IP) of a Service."""
    ingress = _list(_dict(_dict(service.get("status")).get("loadBalancer")).get("ingress"))
    external = None
    for entry in ingress:
        host = _dict(entry).get("ip") or _dict(entry).get("hostname")
        if isinstance(host, str) and _HOST.match(host):
            external = host
            break
    cluster_ip = _dict(service.get("spec")).get("clusterIP")
    if not isinstance(cluster_ip, str) or cluster_ip in ("", "None") or not _HOST.match(cluster_ip):
        cluster_ip = None
    return external, cluster_ip


def _routes_to(route: Obj, namespace: str, name: str) -> bool:
    for rule in _list(_dict(route.get("spec")).get("rules")):
        for ref in _list(_dict(rule).get("backendRefs")):
            ref = _dict(ref)
            if (
                ref.get("group") == POOL_GROUP
                and ref.get("kind") == "InferencePool"
                and ref.get("name") == name
                and ref.get("namespace", namespace) == namespace
            ):
                return True
    return False


def _gateway_addresses(gateway: Obj, parent: Obj) -> tuple[EndpointAddress, ...]:
    """The Gateway's addresses at the port of the listener the route attaches to: the one its
    ``parentRef`` names (``sectionName``, or ``port``), else the first."""
    status = _dict(gateway.get("status"))
    listeners = [_dict(x) for x in _list(_dict(gateway.get("spec")).get("listeners"))]
    section, wanted = parent.get("sectionName"), _port(parent.get("port"))
    chosen = [x for x in listeners if section is None or x.get("name") == section]
    chosen = [x for x in chosen if wanted is None or _port(x.get("port")) == wanted]
    ports = [p for x in chosen if (p := _port(x.get("port")))]
    if (section is not None or wanted is not None) and not ports:
        return ()  # it names a listener the Gateway does not have: no address to send to
    port = ports[0] if ports else 80
    out = []
    for address in _list(status.get("addresses")):
        value = _dict(address).get("value")
        if isinstance(value, str) and _HOST.match(value):
            out.append(EndpointAddress(host=value, port=port))
    return tuple(out)


def parent_gateways(
    namespace: str, name: str, routes: Iterable[Obj], gateways: Index
) -> tuple[ParentGateway, ...]:
    found: dict[PoolKey, ParentGateway] = {}
    for route in routes:
        meta = _dict(route.get("metadata"))
        route_ns = meta.get("namespace")
        if route_ns != namespace or not _routes_to(route, namespace, name):
            continue
        if _dict(meta.get("labels")).get(ROUTE_LABEL) == "true":
            continue  # it may send a forwarded request on again: not where peers forward to
        for parent in _list(_dict(route.get("spec")).get("parentRefs")):
            parent = _dict(parent)
            if parent.get("kind", "Gateway") != "Gateway" or not isinstance(
                parent.get("name"), str
            ):
                continue
            gw_ns = parent.get("namespace", route_ns)
            key = PoolKey(str(gw_ns), parent["name"])
            gateway = gateways.get(key, {})
            found[key] = ParentGateway(
                namespace=key.namespace,
                name=key.name,
                addresses=_gateway_addresses(gateway, parent),
            )
    return tuple(found[k] for k in sorted(found))


def pool_from_object(
    obj: Obj, services: Index, routes: Iterable[Obj] = (), gateways: Index | None = None
) -> LocalPool:
    meta = _dict(obj.get("metadata"))
    spec = _dict(obj.get("spec"))
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    annotations = {
        k: v
        for k, v in _dict(meta.get("annotations")).items()
        if isinstance(k, str) and isinstance(v, str)
    }
    ports = tuple(p for t in _list(spec.get("targetPorts")) if (p := _port(_dict(t).get("number"))))
    protocol = spec.get("appProtocol") if isinstance(spec.get("appProtocol"), str) else "http"
    model = annotations.get(MODEL_ANNOTATION, "")
    invalid: tuple[str, str] | None = None
    if model and not _MODEL.match(model):
        invalid = ("InvalidAnnotation", f"{MODEL_ANNOTATION} is not a model name")
        model = ""
    if not ports:
        invalid = invalid or ("InvalidPool", "spec.targetPorts has no valid port")

    epp, metrics_url = _resolve_epp(namespace, spec, annotations, services)
    if isinstance(epp, tuple):
        invalid, epp = invalid or epp, None
    url = annotations.get(METRICS_URL_ANNOTATION)
    if url is not None and not _is_http_url(url):
        invalid = invalid or ("InvalidAnnotation", f"{METRICS_URL_ANNOTATION} is not an http URL")
    return LocalPool(
        namespace=namespace,
        name=name,
        target_ports=ports,
        app_protocol=str(protocol)[:64],
        model=model,
        epp=epp,
        parents=parent_gateways(namespace, name, routes, gateways or {}),
        export=annotations.get(EXPORT_ANNOTATION),
        metrics_url=metrics_url,
        invalid=invalid,
    )


def _is_http_url(url: str) -> bool:
    return len(url) <= 2048 and re.match(r"^https?://[^\s/]+(/\S*)?$", url) is not None


def _resolve_epp(
    namespace: str, spec: Obj, annotations: Mapping[str, str], services: Index
) -> tuple[EndpointAddress | tuple[str, str] | None, str | None]:
    """(the EPP address or an (reason, message) problem, the metrics URL)."""
    url = annotations.get(METRICS_URL_ANNOTATION)
    metrics_url = url if url is not None and _is_http_url(url) else None
    override = annotations.get(EPP_ADDRESS_ANNOTATION)
    if override is not None:
        address = parse_address(override)
        if address is None:
            return ("InvalidAnnotation", f"{EPP_ADDRESS_ANNOTATION} is not host:port"), metrics_url
        return address, metrics_url or f"http://{address.host}:{EPP_METRICS_PORT}/metrics"
    ref = spec.get("endpointPickerRef")
    if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str):
        return ("InvalidPool", "spec.endpointPickerRef is missing"), metrics_url
    if ref.get("kind", "Service") != "Service" or ref.get("group", "") not in ("", "core"):
        return (
            ("EndpointPickerUnsupported", "only an endpointPickerRef of kind Service is supported"),
            metrics_url,
        )
    port = _port(_dict(ref.get("port")).get("number"))
    if port is None:
        return ("InvalidPool", "spec.endpointPickerRef.port.number is missing"), metrics_url
    service = services.get(PoolKey(namespace, ref["name"]))
    if service is None:
        return (
            ("EndpointPickerUnresolved", f"Service {namespace}/{ref['name']} not found"),
            metrics_url,
        )
    external, cluster_ip = _service_host(service)
    host = external or cluster_ip
    if host is None:
        return (
            ("EndpointPickerUnresolved", f"Service {namespace}/{ref['name']} has no address"),
            metrics_url,
        )
    default_metrics = f"http://{cluster_ip}:{EPP_METRICS_PORT}/metrics" if cluster_ip else None
    return EndpointAddress(host=host, port=port), metrics_url or default_metrics
