"""deploy/helm/federation-agent: with its default values it renders exactly the objects of
deploy/manifests (whose RBAC is checked against the verbs the agent uses), and its switches
(nkey login, no TLS, no signing) give consistent Deployments. Rendered by FakeHelm: no `helm`
binary can be installed here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube.fake_helm import Unsupported, render_chart, render_template

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CHART = DEPLOY / "helm" / "federation-agent"


def _by_kind(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = _by_kind(docs)[("Deployment", "federation-agent")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_default_values_render_the_plain_manifests() -> None:
    manifests = []
    for path in sorted((DEPLOY / "manifests").glob("*.yaml")):
        manifests += [d for d in yaml.safe_load_all(path.read_text()) if d]
    expected = _by_kind([d for d in manifests if d["kind"] != "Namespace"])
    assert _by_kind(render_chart(CHART, "federation-system")) == expected


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "federation-agent"
    assert chart["version"]


@pytest.mark.parametrize(
    ("values", "env_present", "env_absent", "volumes"),
    [
        (
            {"nats": {"user": ""}},
            {"FEDERATION_NATS_NKEY"},
            {"FEDERATION_NATS_USER", "FEDERATION_NATS_PASSWORD_FILE"},
            {"keys", "trust", "nats"},
        ),
        (
            {"nats": {"creds": True}},  # operator mode
            {"FEDERATION_NATS_CREDS"},
            {"FEDERATION_NATS_USER", "FEDERATION_NATS_PASSWORD_FILE", "FEDERATION_NATS_NKEY"},
            {"keys", "trust", "nats"},
        ),
        (
            # Without signing and TLS the agent refuses to start unless told it is insecure.
            {"nats": {"tls": False}, "signing": {"enabled": False}, "insecure": True},
            {"FEDERATION_NATS_USER", "FEDERATION_NATS_PASSWORD_FILE"},
            {"FEDERATION_NATS_CA", "FEDERATION_SIGNING_KEY", "FEDERATION_TRUST_BUNDLE"},
            {"nats"},
        ),
    ],
)
def test_switches_give_consistent_deployments(
    values: dict[str, Any], env_present: set[str], env_absent: set[str], volumes: set[str]
) -> None:
    docs = render_chart(CHART, "fed", {"cluster": "eu-west", **values})
    container = _container(docs)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env_present <= set(env)
    assert not env_absent & set(env)
    spec = _by_kind(docs)[("Deployment", "federation-agent")]["spec"]["template"]["spec"]
    assert {v["name"] for v in spec["volumes"]} == volumes
    assert {m["name"] for m in container["volumeMounts"]} == volumes  # every mount has a volume
    config = _by_kind(docs)[("ConfigMap", "federation-agent")]
    assert config["data"]["FEDERATION_CLUSTER"] == "eu-west"
    assert ("FEDERATION_INSECURE" in config["data"]) == bool(values.get("insecure"))
    assert {d["metadata"].get("namespace") for d in docs} == {"fed", None}  # None: cluster-wide
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_fake_helm_refuses_what_it_does_not_implement() -> None:
    for text in ('{{ include "x" . }}', "{{ .Values.a | upper }}", "{{ if .Values.a }}"):
        with pytest.raises(Unsupported):
            render_template(text, {"Values": {"a": 1}})
    assert (
        render_template("a:\n  {{- if .Values.x }}\n  b: 1\n  {{- end }}\n", {"Values": {}})
        == "a:\n"
    )


def test_feed_values_reach_the_agent_as_settings() -> None:
    values = {
        "feeds": {
            "annotation": {"interval": "30", "threshold": "100000"},
            "haproxy": {
                "address": "tcp://haproxy.gw.svc:9999",
                "backend": "b_{name}",
                "drain": "5",
            },
            "envoyEds": {"enabled": True, "mode": "endpoint"},
            "xds": {"port": "18000", "host": "0.0.0.0", "tlsSecretName": "xds-tls"},
            "gatewayApi": {"enabled": False},
        }
    }
    docs = render_chart(CHART, "fed", values)
    data = _by_kind(docs)[("ConfigMap", "federation-agent")]["data"]
    assert data["FEDERATION_XDS_PORT"] == "18000"
    assert {"name": "xds", "containerPort": 18000} in _container(docs)["ports"]
    env = {e["name"]: e["value"] for e in _container(docs)["env"]}
    assert env["FEDERATION_XDS_CLIENT_CA"] == "/etc/federation/xds/ca.crt"
    mounted = {m["name"]: m["mountPath"] for m in _container(docs)["volumeMounts"]}
    assert mounted["xds"] == "/etc/federation/xds"
    service = _by_kind(docs)[("Service", "federation-agent")]
    assert {"name": "xds", "port": 18000, "targetPort": "xds"} in service["spec"]["ports"]
    assert data["FEDERATION_GATEWAY_API"] == "false"
    role = _by_kind(docs)[("ClusterRole", "federation-agent")]
    writes = {
        (group, resource)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        if {"create", "patch"} & set(rule["verbs"])
    }
    assert ("", "services") not in writes  # without the feed, no Service writes granted
    assert ("gateway.networking.k8s.io", "httproutes") not in writes
    assert data["FEDERATION_HAPROXY_SOCKET"] == "tcp://haproxy.gw.svc:9999"
    assert data["FEDERATION_HAPROXY_BACKEND"] == "b_{name}"
    assert data["FEDERATION_ANNOTATION_INTERVAL"] == "30"
    assert data["FEDERATION_ENVOY_MODE"] == "endpoint"
    container = _container(docs)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["eds"] == data["FEDERATION_ENVOY_EDS_DIR"]  # writable: the root fs is not
    # Every FEDERATION_* key the chart sets is a variable `federation agent` reads.
    from click.testing import CliRunner

    from federation.cli import main

    help_text = CliRunner().invoke(main, ["agent", "--help"]).output
    flags = {k.removeprefix("FEDERATION_").lower().replace("_", "-") for k in data}
    assert all(f"--{flag}" in help_text for flag in flags), flags
    defaults = render_chart(CHART, "fed")
    assert (
        "FEDERATION_HAPROXY_SOCKET"
        not in _by_kind(defaults)[("ConfigMap", "federation-agent")]["data"]
    )
