"""The Helm chart, linted and rendered offline with helm-python-sdk (Helm as a library, no binary).

Rendered manifests are validated against the Kubernetes OpenAPI schemas shipped by kubernetes-validate;
custom resources (KEDA, Prometheus Operator) have no schema there, so their structure is asserted here.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from cryptography.fernet import Fernet, MultiFernet

from service.settings import Settings
from tests.deploy.promql import exported_series, selectors

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "outbound-scim"
KUBE_VERSION = "1.30.0"
# the oldest release Chart.yaml's kubeVersion admits, and the reference one
VALIDATE_VERSIONS = ("1.25.0", KUBE_VERSION)
RELEASE, NAMESPACE = "scim", "iam"
FULLNAME = "scim-outbound-scim"
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
FERNET_KEY = "kPWUf8ehR0Yf1jOcEYWf0z0j0w0b7m0tLZ3sJ8ZQqQk="
OLD_FERNET_KEY = "x0Vn3Hh7p1mXbq8W4rS2cT6yZ9aD5eF0gJ1kL3nQ7uY="
ADMIN_TOKEN = "admin-token-from-values"
# What the chart requires and never generates: the token key and the admin token (value or existingSecret).
MINIMAL: dict[str, Any] = {"adminToken": {"value": ADMIN_TOKEN}, "tokenKey": {"value": FERNET_KEY}}
RUNBOOK_BASE = "https://git.example.com/iam/outbound-scim/blob/main/docs/operations/runbook.md"
RUNBOOK = ROOT / "docs" / "operations" / "runbook.md"
DASHBOARD = ROOT / "deploy" / "grafana" / "outbound-scim.json"
# Alerts on the service's own metrics, and those that also need kafka_exporter (prometheusRule.kafkaExporter).
CORE_ALERTS = {
    "OutboundScimDown",
    "OutboundScimTenantFailing",
    "OutboundScimTenantUnauthorized",
    "OutboundScimCircuitOpen",
    "OutboundScimParkedGrowing",
    "OutboundScimDeadLetters",
    "OutboundScimLagGrowing",
    "OutboundScimChangesDelayed",
    "OutboundScimNoProgress",
}
KAFKA_EXPORTER_ALERTS = {"OutboundScimIntakeStalled", "OutboundScimIntakeLagGrowing"}

# Every optional feature on, KEDA flavour (KEDA and HPA are exclusive: HPA_FULL is the other one).
KEDA_FULL: dict[str, Any] = {
    "image": {"repository": "registry.example.com/iam/outbound-scim", "digest": "sha256:" + "a" * 64},
    "imagePullSecrets": [{"name": "registry"}],
    "partitions": 6,
    "kafka": {
        "bootstrapServers": "kafka-0.kafka:9093,kafka-1.kafka:9093",
        "securityProtocol": "SASL_SSL",
        "sasl": {
            "mechanism": "SCRAM-SHA-512",
            "username": "outbound-scim",
            "existingSecret": "outbound-scim-kafka-user",
            "existingSecretKey": "password",
        },
        "tls": {"caSecret": "kafka-cluster-ca-cert", "caSecretKey": "ca.crt"},
    },
    "adminToken": {"existingSecret": "outbound-scim-admin", "existingSecretKey": "token"},
    "tokenKey": {"existingSecret": "outbound-scim-key", "existingSecretKey": "fernet"},
    "keycloak": {
        "url": "https://sso.example.com",
        "authRealm": "scim-admin",
        "clientId": "outbound-scim",
        "existingSecret": "outbound-scim-keycloak",
        "existingSecretKey": "secret",
        "authoritative": False,
    },
    "egress": {"caBundle": {"secret": "corporate-ca", "key": "bundle.pem"}},
    "topics": {"parking": "scim.parked", "replayCursors": "scim.replay-cursors"},
    "config": {
        "max_in_flight": 2000,
        "max_buffered": 1000000,
        "retry_base_seconds": 0.5,
        "change_retry_budget_seconds": 600,
        "breaker_threshold": 5,
    },
    "extraEnv": [{"name": "TZ", "value": "UTC"}],
    "podLabels": {"team": "iam"},
    "podAnnotations": {"example.com/owner": "iam"},
    "priorityClassName": "business-critical",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "iam", "effect": "NoSchedule"}],
    "serviceAccount": {"annotations": {"example.com/role": "outbound-scim"}},
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "annotations": {"nginx.ingress.kubernetes.io/whitelist-source-range": "10.0.0.0/8"},
        "hosts": [{"host": "scim-admin.example.com", "paths": [{"path": "/tenants", "pathType": "Prefix"}]}],
        "tls": [{"secretName": "scim-admin-tls", "hosts": ["scim-admin.example.com"]}],
    },
    "keda": {"enabled": True, "minReplicaCount": 3, "maxReplicaCount": 6, "lagThreshold": 200},
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "prometheusRule": {
        "enabled": True,
        "labels": {"release": "kube-prometheus-stack"},
        "runbookBaseUrl": RUNBOOK_BASE,
        "kafkaExporter": {"enabled": True, "selector": 'job="kafka-exporter"'},
        "additionalRules": [{"alert": "Custom", "expr": "vector(1) == 0", "labels": {"severity": "info"}}],
    },
    "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "IAM"}},
}
HPA_FULL: dict[str, Any] = {
    **copy.deepcopy(KEDA_FULL),
    "keda": {"enabled": False},
    "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6, "targetMemoryUtilizationPercentage": 80},
    "kafka": {
        "bootstrapServers": "kafka:9092",
        "securityProtocol": "SASL_PLAINTEXT",
        "sasl": {"mechanism": "PLAIN", "username": "scim", "password": "kafka-pass"},
        "tls": {"caSecret": ""},
    },
    "keycloak": {"url": "http://keycloak.iam:8080", "clientId": "outbound-scim", "clientSecret": "kc-secret"},
    "egress": {
        "allowHttpHosts": ["scim-mock.dev.svc", "127.0.0.1"],
        "allowPrivateNetworks": True,
        "caBundle": {"configMap": "trust-bundle", "key": "trust-bundle.pem"},
    },
}
SCENARIOS = {"minimal": MINIMAL, "keda-full": KEDA_FULL, "hpa-full": HPA_FULL}


# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


def with_secrets(values: dict[str, Any] | None) -> dict[str, Any]:
    """`values` plus MINIMAL's secret value for each secret that names neither a value nor an existingSecret."""
    out = copy.deepcopy(values or {})
    for name, required in MINIMAL.items():
        given = out.setdefault(name, {})
        if not given.get("value") and not given.get("existingSecret"):
            given.update(required)
    return out


def render_raw(chart: helm_python.Chart, values: dict[str, Any] | None = None) -> dict[str, str]:
    return chart.render(with_secrets(values), name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(chart: helm_python.Chart, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every rendered Kubernetes object (NOTES.txt excluded)."""
    docs: list[dict[str, Any]] = []
    for path, text in sorted(render_raw(chart, values).items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    [c] = containers
    return c


def env_of(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(docs)["env"]}


def render_error(chart: helm_python.Chart, values: dict[str, Any], *, secrets: bool = True) -> str:
    with pytest.raises((helm_python.HelmRenderError, helm_python.HelmValuesError)) as caught:
        chart.render(with_secrets(values) if secrets else values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return str(caught.value)


def merged(base: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    out.update(overrides)
    return out


# ------------------------------------------------------------------------------------- lint and schemas


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict_is_clean(scenario: str) -> None:
    report = helm_python.lint(
        CHART, SCENARIOS[scenario], strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}"
    )
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


@pytest.mark.parametrize("version", VALIDATE_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_manifests_validate_against_kubernetes_schemas(chart: helm_python.Chart, scenario: str, version: str) -> None:
    docs = render(chart, SCENARIOS[scenario])
    assert docs
    for doc in docs:
        assert doc["metadata"]["namespace"] == NAMESPACE
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        if doc["kind"] in CUSTOM_KINDS:
            continue  # no schema offline: asserted by the tests below
        kubernetes_validate.validate(doc, version, strict=True)


def test_default_render_has_the_core_objects_only(chart: helm_python.Chart) -> None:
    kinds = sorted(d["kind"] for d in render(chart))
    assert kinds == ["Deployment", "PodDisruptionBudget", "Secret", "Service", "ServiceAccount"]


def test_full_render_has_every_optional_object(chart: helm_python.Chart) -> None:
    keda = sorted(d["kind"] for d in render(chart, KEDA_FULL))
    assert keda == [
        "ConfigMap",
        "Deployment",
        "Ingress",
        "PodDisruptionBudget",
        "PrometheusRule",
        "ScaledObject",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
        "TriggerAuthentication",
    ]
    hpa = {d["kind"] for d in render(chart, HPA_FULL)}
    assert "HorizontalPodAutoscaler" in hpa
    assert "ScaledObject" not in hpa


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"typo": 1}, "additional properties 'typo'"),
        ({"partitions": 0}, "/partitions"),
        ({"tokenKey": {"value": "not-a-fernet-key"}}, "/tokenKey/value"),
        ({"keda": {"minReplicaCount": 0}}, "/keda/minReplicaCount"),
        ({"kafka": {"securityProtocol": "SASL"}}, "/kafka/securityProtocol"),
        ({"securityContext": {"readOnlyRootFilesystem": False}}, "/securityContext/readOnlyRootFilesystem"),
        ({"config": {"Max-In-Flight": 3}}, "'Max-In-Flight' does not match pattern"),
        ({"keycloak": {"url": "sso.example.com"}}, "/keycloak/url"),
        ({"keycloak": {"authoritative": "yes"}}, "/keycloak/authoritative"),
        ({"egress": {"allowHttpHosts": ["a.dev,b.dev"]}}, "/egress/allowHttpHosts/0"),
        ({"egress": {"allowPrivateNetworks": "true"}}, "/egress/allowPrivateNetworks"),
        ({"egress": {"caBundle": {"secret": "Not_A_Name"}}}, "/egress/caBundle/secret"),
        ({"topics": {"parking": ""}}, "/topics/parking"),
    ],
)
def test_schema_rejects_bad_values(chart: helm_python.Chart, values: dict[str, Any], where: str) -> None:
    assert where in render_error(chart, values)


# ------------------------------------------------------------------------------------------- Deployment


def test_probes(chart: helm_python.Chart) -> None:
    docs = render(chart)
    c = container(docs)
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    [port] = c["ports"]
    assert port == {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    assert env_of(docs)["OUTBOUND_SCIM_API_PORT"]["value"] == "8080"
    assert c["args"] == ["run"]


def test_hardened_security_context(chart: helm_python.Chart) -> None:
    docs = render(chart)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(docs)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # the only writable paths are emptyDirs: /tmp, and the state dir the service is told about
    mounts = {m["mountPath"]: m for m in container(docs)["volumeMounts"]}
    assert set(mounts) == {"/tmp", "/var/lib/outbound-scim"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert all("emptyDir" in volumes[mount["name"]] for mount in mounts.values())
    env = {e["name"]: e.get("value") for e in container(docs)["env"]}
    assert env["OUTBOUND_SCIM_STATE_DIR"] == "/var/lib/outbound-scim"
    assert volumes[mounts["/var/lib/outbound-scim"]["name"]]["emptyDir"]["sizeLimit"] == "2Gi"
    # no Kubernetes API credentials, no service-link variables leaking into OUTBOUND_SCIM_* settings
    assert pod["automountServiceAccountToken"] is False
    assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False


def test_resources(chart: helm_python.Chart) -> None:
    resources = container(render(chart))["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]


def test_topology_spread_selects_the_pods(chart: helm_python.Chart) -> None:
    pod_template = one(render(chart), "Deployment")["spec"]["template"]
    constraints = pod_template["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for c in constraints:
        assert c["labelSelector"]["matchLabels"].items() <= pod_template["metadata"]["labels"].items()


def test_termination_grace_exceeds_the_drain(chart: helm_python.Chart) -> None:
    docs = render(chart)
    assert env_of(docs)["OUTBOUND_SCIM_DRAIN_TIMEOUT_SECONDS"]["value"] == "20"
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 35
    docs = render(chart, {"drainTimeoutSeconds": 42.5})
    assert env_of(docs)["OUTBOUND_SCIM_DRAIN_TIMEOUT_SECONDS"]["value"] == "42.5"
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 58
    docs = render(chart, {"terminationGracePeriodSeconds": 90})
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 90
    assert "must exceed drainTimeoutSeconds" in render_error(chart, {"terminationGracePeriodSeconds": 20})


def test_env_names_are_service_settings(chart: helm_python.Chart) -> None:
    """Every OUTBOUND_SCIM_* variable the chart sets is a field of service.settings.Settings."""
    fields = {f"OUTBOUND_SCIM_{name.upper()}" for name in Settings.model_fields}
    for scenario in SCENARIOS.values():
        names = {n for n in env_of(render(chart, scenario)) if n.startswith("OUTBOUND_SCIM_")}
        assert names <= fields, names - fields
    required = {f"OUTBOUND_SCIM_{n.upper()}" for n, f in Settings.model_fields.items() if f.is_required()}
    assert required <= set(env_of(render(chart)))


def test_env_from_values(chart: helm_python.Chart) -> None:
    env = env_of(
        render(
            chart,
            {
                "kafka": {"bootstrapServers": "b1:9092,b2:9092"},
                "topics": {"events": "kc-user", "changes": "scim.changes"},
                "groupId": "scim-prod",
                "partitions": 12,
                "replicationFactor": 3,
                "logLevel": "DEBUG",
            },
        )
    )
    values = {name: e.get("value") for name, e in env.items()}
    assert values["OUTBOUND_SCIM_KAFKA_BOOTSTRAP_SERVERS"] == "b1:9092,b2:9092"
    assert values["OUTBOUND_SCIM_EVENTS_TOPIC"] == "kc-user"
    assert values["OUTBOUND_SCIM_ADMIN_EVENTS_TOPIC"] == "keycloak-admin-events"
    assert values["OUTBOUND_SCIM_CHANGES_TOPIC"] == "scim.changes"
    assert values["OUTBOUND_SCIM_GROUP_ID"] == "scim-prod"
    assert values["OUTBOUND_SCIM_INTERNAL_PARTITIONS"] == "12"
    assert values["OUTBOUND_SCIM_INTERNAL_REPLICATION_FACTOR"] == "3"
    assert values["OUTBOUND_SCIM_LOG_LEVEL"] == "DEBUG"
    assert values["OUTBOUND_SCIM_KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
    assert "OUTBOUND_SCIM_KAFKA_SASL_PASSWORD" not in env
    assert "OUTBOUND_SCIM_KAFKA_SSL_CAFILE" not in env
    env = env_of(render(chart, KEDA_FULL))
    assert env["OUTBOUND_SCIM_PARKING_TOPIC"]["value"] == "scim.parked"
    assert env["OUTBOUND_SCIM_REPLAY_CURSORS_TOPIC"]["value"] == "scim.replay-cursors"


def test_config_passthrough(chart: helm_python.Chart) -> None:
    env = env_of(render(chart, KEDA_FULL))
    assert env["OUTBOUND_SCIM_MAX_IN_FLIGHT"]["value"] == "2000"
    assert env["OUTBOUND_SCIM_MAX_BUFFERED"]["value"] == "1000000"  # not 1e+06
    assert env["OUTBOUND_SCIM_RETRY_BASE_SECONDS"]["value"] == "0.5"
    assert env["TZ"]["value"] == "UTC"
    message = render_error(chart, {"config": {"kafka_bootstrap_servers": "x:1"}})
    assert "config.kafka_bootstrap_servers" in message


def test_the_pod_name_is_the_instance_id(chart: helm_python.Chart) -> None:
    """Every scenario sets OUTBOUND_SCIM_INSTANCE_ID from the pod name (a restarted container keeps it);
    `config` may not override it."""
    for scenario in SCENARIOS.values():
        env = {e["name"]: e for e in container(render(chart, scenario))["env"]}
        assert env["OUTBOUND_SCIM_INSTANCE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "config.instance_id" in render_error(chart, {"config": {"instance_id": "pod-0"}})
    assert "config.group_instance_id" in render_error(chart, {"config": {"group_instance_id": "pod-0"}})


def test_image_reference(chart: helm_python.Chart) -> None:
    assert container(render(chart))["image"] == "outbound-scim:0.1.0"
    assert container(render(chart, {"image": {"repository": "r/o", "tag": "1.2.3"}}))["image"] == "r/o:1.2.3"
    assert container(render(chart, KEDA_FULL))["image"] == "registry.example.com/iam/outbound-scim@sha256:" + "a" * 64


# ---------------------------------------------------------------------------------------------- secrets


def secret_ref(env: dict[str, dict[str, Any]], name: str) -> tuple[str, str]:
    ref = env[name]["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def test_secrets_from_values(chart: helm_python.Chart) -> None:
    """The chart's Secret holds the admin token and the token key as given; pods read them by reference."""
    docs = render(chart, MINIMAL)
    secret = one(docs, "Secret")
    assert secret["metadata"]["name"] == FULLNAME
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert base64.b64decode(secret["data"]["admin-token"]).decode() == ADMIN_TOKEN
    assert base64.b64decode(secret["data"]["token-key"]).decode() == FERNET_KEY
    env = env_of(docs)
    assert secret_ref(env, "OUTBOUND_SCIM_ADMIN_TOKEN") == (FULLNAME, "admin-token")
    assert secret_ref(env, "OUTBOUND_SCIM_TOKEN_KEY") == (FULLNAME, "token-key")
    # no secret value in plain env
    assert all("value" not in env[n] for n in ("OUTBOUND_SCIM_ADMIN_TOKEN", "OUTBOUND_SCIM_TOKEN_KEY"))


def test_rendering_twice_gives_the_same_secret(chart: helm_python.Chart) -> None:
    """Nothing is generated: two renders (helm template, a GitOps sync) give identical Secret data."""
    first, second = (one(render(chart, MINIMAL), "Secret")["data"] for _ in range(2))
    assert first == second
    template = (CHART / "templates" / "secret.yaml").read_text()
    assert not re.search(r"\brand[A-Z]\w*|genPrivateKey|uuidv4|\blookup\b", template)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"adminToken": {"value": "a"}}, "tokenKey: set tokenKey.existingSecret (recommended"),
        ({"tokenKey": {"value": FERNET_KEY}}, "adminToken: set adminToken.existingSecret (recommended)"),
        ({}, "or tokenKey.value (outbound-scim gen-key)"),
    ],
)
def test_missing_token_key_or_admin_token_is_a_clear_error(
    chart: helm_python.Chart, values: dict[str, Any], message: str
) -> None:
    """Neither a value nor an existingSecret: rendering fails and says which value to set, and why."""
    assert message in render_error(chart, values, secrets=False)


def test_token_key_may_list_several_keys(chart: helm_python.Chart) -> None:
    """A rotation in progress: comma-separated Fernet keys pass the schema and reach the pods as given."""
    keys = f"{FERNET_KEY},{OLD_FERNET_KEY}"
    MultiFernet([Fernet(k) for k in keys.split(",")])  # what the service builds from it
    secret = one(render(chart, {"tokenKey": {"value": keys}}), "Secret")
    assert base64.b64decode(secret["data"]["token-key"]).decode() == keys
    assert "/tokenKey/value" in render_error(chart, {"tokenKey": {"value": f"{FERNET_KEY}, {OLD_FERNET_KEY}"}})


def test_explicit_secret_values(chart: helm_python.Chart) -> None:
    secret = one(render(chart, {"adminToken": {"value": "admin-1"}, "tokenKey": {"value": FERNET_KEY}}), "Secret")
    assert base64.b64decode(secret["data"]["admin-token"]).decode() == "admin-1"
    assert base64.b64decode(secret["data"]["token-key"]).decode() == FERNET_KEY


def test_existing_secrets_swap_the_name_and_render_no_secret(chart: helm_python.Chart) -> None:
    docs = render(chart, KEDA_FULL)
    assert by_kind(docs, "Secret") == []
    env = env_of(docs)
    assert secret_ref(env, "OUTBOUND_SCIM_ADMIN_TOKEN") == ("outbound-scim-admin", "token")
    assert secret_ref(env, "OUTBOUND_SCIM_TOKEN_KEY") == ("outbound-scim-key", "fernet")
    assert secret_ref(env, "OUTBOUND_SCIM_KAFKA_SASL_PASSWORD") == ("outbound-scim-kafka-user", "password")


def test_one_existing_secret_leaves_the_others_in_the_chart_secret(chart: helm_python.Chart) -> None:
    docs = render(chart, {"tokenKey": {"existingSecret": "scim-key"}})
    secret = one(docs, "Secret")
    assert set(secret["data"]) == {"admin-token"}
    assert "annotations" not in secret["metadata"]  # nothing that must outlive the release
    env = env_of(docs)
    assert secret_ref(env, "OUTBOUND_SCIM_TOKEN_KEY") == ("scim-key", "token-key")
    assert secret_ref(env, "OUTBOUND_SCIM_ADMIN_TOKEN") == (FULLNAME, "admin-token")


def test_kafka_sasl_ssl_with_ca(chart: helm_python.Chart) -> None:
    docs = render(chart, KEDA_FULL)
    env = env_of(docs)
    assert env["OUTBOUND_SCIM_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert env["OUTBOUND_SCIM_KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
    assert env["OUTBOUND_SCIM_KAFKA_SASL_USERNAME"]["value"] == "outbound-scim"
    cafile = env["OUTBOUND_SCIM_KAFKA_SSL_CAFILE"]["value"]
    mount = next(m for m in container(docs)["volumeMounts"] if cafile.startswith(m["mountPath"] + "/"))
    assert mount["readOnly"] is True
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "kafka-cluster-ca-cert"
    assert [item["path"] for item in volume["secret"]["items"]] == [cafile.rsplit("/", 1)[1]]


def test_kafka_sasl_password_in_chart_secret(chart: helm_python.Chart) -> None:
    docs = render(chart, HPA_FULL)
    secret = one(docs, "Secret")
    assert base64.b64decode(secret["data"]["kafka-sasl-password"]).decode() == "kafka-pass"
    assert "admin-token" not in secret["data"]
    assert secret_ref(env_of(docs), "OUTBOUND_SCIM_KAFKA_SASL_PASSWORD") == (FULLNAME, "kafka-sasl-password")
    assert "OUTBOUND_SCIM_KAFKA_SSL_CAFILE" not in env_of(docs)


@pytest.mark.parametrize(
    ("kafka", "message"),
    [
        ({"securityProtocol": "SASL_SSL", "sasl": {"username": "u", "password": "p"}}, "kafka.sasl.mechanism"),
        ({"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "PLAIN", "password": "p"}}, "kafka.sasl.username"),
        (
            {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "PLAIN", "username": "u"}},
            "kafka.sasl.existingSecret",
        ),
        ({"securityProtocol": "PLAINTEXT", "sasl": {"mechanism": "PLAIN"}}, "kafka.securityProtocol is PLAINTEXT"),
        (
            {
                "securityProtocol": "SASL_PLAINTEXT",
                "sasl": {"mechanism": "PLAIN", "username": "u", "password": "p"},
                "tls": {"caSecret": "ca"},
            },
            "kafka.tls.caSecret",
        ),
    ],
)
def test_kafka_settings_are_checked(chart: helm_python.Chart, kafka: dict[str, Any], message: str) -> None:
    assert message in render_error(chart, {"kafka": kafka})


# ------------------------------------------------------------------------------------- Keycloak, egress

KEYCLOAK_ENV = (
    "OUTBOUND_SCIM_KEYCLOAK_URL",
    "OUTBOUND_SCIM_KEYCLOAK_AUTH_REALM",
    "OUTBOUND_SCIM_KEYCLOAK_CLIENT_ID",
    "OUTBOUND_SCIM_KEYCLOAK_CLIENT_SECRET",
    "OUTBOUND_SCIM_KEYCLOAK_AUTHORITATIVE",
)


def settings_from(env: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a pod would read: plain values as rendered, each secretKeyRef as `<secret>/<key>`, the
    pod name as a pod's."""
    for name in [n for n in os.environ if n.startswith("OUTBOUND_SCIM_")]:
        monkeypatch.delenv(name)
    for name, entry in env.items():
        if not name.startswith("OUTBOUND_SCIM_"):
            continue
        if "value" in entry:
            monkeypatch.setenv(name, entry["value"])
        elif "fieldRef" in entry.get("valueFrom", {}):  # the pod's own name
            monkeypatch.setenv(name, "outbound-scim-7d9f8-x2k4q")
        else:
            monkeypatch.setenv(name, "/".join(secret_ref(env, name)))
    return Settings()


def test_keycloak_and_egress_defaults(chart: helm_python.Chart) -> None:
    docs = render(chart)
    env = env_of(docs)
    assert not set(KEYCLOAK_ENV) & set(env)  # no Keycloak access: backfill off
    assert "keycloak-client-secret" not in one(docs, "Secret")["data"]
    assert env["OUTBOUND_SCIM_ALLOW_PRIVATE_NETWORKS"]["value"] == "false"
    assert "OUTBOUND_SCIM_ALLOW_HTTP_HOSTS" not in env
    assert "OUTBOUND_SCIM_CA_BUNDLE" not in env
    assert env["OUTBOUND_SCIM_PARKING_TOPIC"]["value"] == "outbound-scim.parked"
    assert env["OUTBOUND_SCIM_REPLAY_CURSORS_TOPIC"]["value"] == "outbound-scim.replay-cursors"
    # the chart's defaults are the service's defaults
    defaults = Settings.model_fields
    assert env["OUTBOUND_SCIM_PARKING_TOPIC"]["value"] == defaults["parking_topic"].default
    assert env["OUTBOUND_SCIM_REPLAY_CURSORS_TOPIC"]["value"] == defaults["replay_cursors_topic"].default
    assert env["OUTBOUND_SCIM_ACTIVITY_TOPIC"]["value"] == defaults["activity_topic"].default
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["keycloak"]["authRealm"] == defaults["keycloak_auth_realm"].default
    assert values["keycloak"]["authoritative"] is defaults["keycloak_authoritative"].default
    assert values["egress"]["allowPrivateNetworks"] is defaults["allow_private_networks"].default


def test_keycloak_client_secret_in_chart_secret(chart: helm_python.Chart) -> None:
    docs = render(chart, {"keycloak": {"url": "https://sso.example.com", "clientId": "scim", "clientSecret": "kc-1"}})
    env = env_of(docs)
    assert set(KEYCLOAK_ENV) <= set(env)
    assert env["OUTBOUND_SCIM_KEYCLOAK_URL"]["value"] == "https://sso.example.com"
    assert env["OUTBOUND_SCIM_KEYCLOAK_AUTH_REALM"]["value"] == "master"
    assert env["OUTBOUND_SCIM_KEYCLOAK_CLIENT_ID"]["value"] == "scim"
    assert env["OUTBOUND_SCIM_KEYCLOAK_AUTHORITATIVE"]["value"] == "true"
    assert secret_ref(env, "OUTBOUND_SCIM_KEYCLOAK_CLIENT_SECRET") == (FULLNAME, "keycloak-client-secret")
    assert "value" not in env["OUTBOUND_SCIM_KEYCLOAK_CLIENT_SECRET"]  # never in plain env
    secret = one(docs, "Secret")
    assert base64.b64decode(secret["data"]["keycloak-client-secret"]).decode() == "kc-1"
    assert {"admin-token", "token-key"} <= set(secret["data"])


def test_keycloak_existing_secret_swaps_the_name_and_renders_no_secret_key(chart: helm_python.Chart) -> None:
    values = {
        "keycloak": {
            "url": "https://sso.example.com",
            "clientId": "scim",
            "clientSecret": "ignored",
            "existingSecret": "scim-keycloak",
            "existingSecretKey": "secret",
        }
    }
    docs = render(chart, values)
    env = env_of(docs)
    assert secret_ref(env, "OUTBOUND_SCIM_KEYCLOAK_CLIENT_SECRET") == ("scim-keycloak", "secret")
    secret = one(docs, "Secret")  # still holds the admin token / token key given as values
    assert set(secret["data"]) == {"admin-token", "token-key"}
    # every secret from an existing Secret (KEDA_FULL): no chart Secret at all
    docs = render(chart, KEDA_FULL)
    assert by_kind(docs, "Secret") == []
    env = env_of(docs)
    assert secret_ref(env, "OUTBOUND_SCIM_KEYCLOAK_CLIENT_SECRET") == ("outbound-scim-keycloak", "secret")
    assert env["OUTBOUND_SCIM_KEYCLOAK_AUTH_REALM"]["value"] == "scim-admin"
    assert env["OUTBOUND_SCIM_KEYCLOAK_AUTHORITATIVE"]["value"] == "false"


@pytest.mark.parametrize(
    ("keycloak", "message"),
    [
        ({"url": "https://sso.example.com", "clientSecret": "s"}, "set keycloak.clientId"),
        ({"url": "https://sso.example.com", "clientId": "scim"}, "set keycloak.existingSecret (preferred)"),
        ({"clientId": "scim", "clientSecret": "s"}, "keycloak.url is empty"),
        ({"existingSecret": "scim-keycloak"}, "keycloak.url is empty"),
    ],
)
def test_keycloak_settings_are_checked(chart: helm_python.Chart, keycloak: dict[str, Any], message: str) -> None:
    assert message in render_error(chart, {"keycloak": keycloak})


def test_egress_policy_values(chart: helm_python.Chart) -> None:
    env = env_of(render(chart, HPA_FULL))
    assert env["OUTBOUND_SCIM_ALLOW_HTTP_HOSTS"]["value"] == "scim-mock.dev.svc,127.0.0.1"
    assert env["OUTBOUND_SCIM_ALLOW_PRIVATE_NETWORKS"]["value"] == "true"


def ca_bundle_volume(docs: list[dict[str, Any]]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(OUTBOUND_SCIM_CA_BUNDLE, its volume mount, its volume)."""
    path = env_of(docs)["OUTBOUND_SCIM_CA_BUNDLE"]["value"]
    [mount] = [m for m in container(docs)["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    [volume] = [v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    return path, mount, volume


def test_ca_bundle_from_a_secret_is_mounted_read_only(chart: helm_python.Chart) -> None:
    docs = render(chart, KEDA_FULL)
    path, mount, volume = ca_bundle_volume(docs)
    assert path == "/etc/outbound-scim/egress-ca/bundle.pem"
    assert mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "corporate-ca"
    assert volume["secret"]["items"] == [{"key": "bundle.pem", "path": "bundle.pem"}]
    assert "configMap" not in volume
    # a separate mount from the Kafka CA
    kafka_ca = env_of(docs)["OUTBOUND_SCIM_KAFKA_SSL_CAFILE"]["value"]
    assert not kafka_ca.startswith(mount["mountPath"] + "/")


def test_ca_bundle_from_a_config_map_is_mounted_read_only(chart: helm_python.Chart) -> None:
    path, mount, volume = ca_bundle_volume(render(chart, HPA_FULL))
    assert path == "/etc/outbound-scim/egress-ca/trust-bundle.pem"
    assert mount["readOnly"] is True
    assert volume["configMap"]["name"] == "trust-bundle"
    assert volume["configMap"]["items"] == [{"key": "trust-bundle.pem", "path": "trust-bundle.pem"}]
    assert "secret" not in volume
    # the default key fits kube-root-ca.crt, cert-manager and Strimzi CA secrets
    path, _, volume = ca_bundle_volume(render(chart, {"egress": {"caBundle": {"configMap": "kube-root-ca.crt"}}}))
    assert path == "/etc/outbound-scim/egress-ca/ca.crt"
    assert volume["configMap"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]


def test_ca_bundle_has_one_source(chart: helm_python.Chart) -> None:
    message = render_error(chart, {"egress": {"caBundle": {"secret": "a", "configMap": "b"}}})
    assert "egress.caBundle.secret and egress.caBundle.configMap" in message


@pytest.mark.parametrize("scenario", ["keda-full", "hpa-full"])
def test_rendered_env_parses_as_settings(
    chart: helm_python.Chart, scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = SCENARIOS[scenario]
    settings = settings_from(env_of(render(chart, values)), monkeypatch)
    keycloak, egress = values["keycloak"], values["egress"]
    assert settings.keycloak_url == keycloak["url"]
    assert settings.keycloak_auth_realm == keycloak.get("authRealm", "master")
    assert settings.keycloak_client_id == keycloak["clientId"]
    assert settings.keycloak_client_secret is not None
    assert settings.keycloak_authoritative is keycloak.get("authoritative", True)
    assert settings.http_hosts == frozenset(egress.get("allowHttpHosts", []))
    assert settings.allow_private_networks is egress.get("allowPrivateNetworks", False)
    assert settings.ca_bundle == f"/etc/outbound-scim/egress-ca/{egress['caBundle']['key']}"
    if scenario == "keda-full":
        assert settings.parking_topic == "scim.parked"
        assert settings.replay_cursors_topic == "scim.replay-cursors"
        assert settings.change_retry_budget_seconds == 600
        assert settings.breaker_threshold == 5


@pytest.mark.parametrize(
    "setting",
    [
        "keycloak_url",
        "keycloak_client_secret",
        "keycloak_authoritative",
        "allow_http_hosts",
        "allow_private_networks",
        "ca_bundle",
        "parking_topic",
        "replay_cursors_topic",
        "activity_topic",
    ],
)
def test_config_refuses_settings_with_chart_values(chart: helm_python.Chart, setting: str) -> None:
    assert f"config.{setting}" in render_error(chart, {"config": {setting: "x"}})


# ----------------------------------------------------------------------------------- scaling (KEDA / HPA)


def test_fixed_replicas_without_autoscaling(chart: helm_python.Chart) -> None:
    docs = render(chart, {"replicaCount": 3})
    assert one(docs, "Deployment")["spec"]["replicas"] == 3
    assert by_kind(docs, "HorizontalPodAutoscaler") == by_kind(docs, "ScaledObject") == []


def test_keda_and_hpa_are_exclusive(chart: helm_python.Chart) -> None:
    values = merged(KEDA_FULL, autoscaling={"enabled": True})
    assert "autoscaling.enabled and keda.enabled are mutually exclusive" in render_error(chart, values)


@pytest.mark.parametrize(("scenario", "kind"), [("keda-full", "ScaledObject"), ("hpa-full", "HorizontalPodAutoscaler")])
def test_autoscaling_drops_the_replicas_field(chart: helm_python.Chart, scenario: str, kind: str) -> None:
    docs = render(chart, SCENARIOS[scenario])
    assert "replicas" not in one(docs, "Deployment")["spec"]
    scaler = one(docs, kind)
    assert scaler["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    maximum = scaler["spec"].get("maxReplicaCount", scaler["spec"].get("maxReplicas"))
    assert maximum <= SCENARIOS[scenario]["partitions"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 7}, "replicaCount (7) exceeds partitions (6)"),
        ({"autoscaling": {"enabled": True, "maxReplicas": 7}}, "autoscaling.maxReplicas (7) exceeds partitions (6)"),
        ({"keda": {"enabled": True, "maxReplicaCount": 7}}, "keda.maxReplicaCount (7) exceeds partitions (6)"),
        ({"partitions": 3, "keda": {"enabled": True}}, "keda.maxReplicaCount (6) exceeds partitions (3)"),
        ({"keda": {"enabled": True, "minReplicaCount": 5, "maxReplicaCount": 4}}, "keda.minReplicaCount (5) exceeds"),
        ({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 4}}, "autoscaling.minReplicas (5) exceeds"),
    ],
)
def test_replicas_are_capped_at_the_partition_count(
    chart: helm_python.Chart, values: dict[str, Any], message: str
) -> None:
    assert message in render_error(chart, values)


def test_max_replicas_equal_to_partitions_is_allowed(chart: helm_python.Chart) -> None:
    docs = render(chart, {"partitions": 12, "keda": {"enabled": True, "maxReplicaCount": 12}})
    assert one(docs, "ScaledObject")["spec"]["maxReplicaCount"] == 12


def test_keda_scaled_object(chart: helm_python.Chart) -> None:
    docs = render(chart, KEDA_FULL)
    spec = one(docs, "ScaledObject")["spec"]
    assert one(docs, "ScaledObject")["apiVersion"] == "keda.sh/v1alpha1"
    assert spec["minReplicaCount"] == 3
    assert spec["maxReplicaCount"] == 6
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
    [trigger] = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata is a map of strings"
    assert meta["bootstrapServers"] == "kafka-0.kafka:9093,kafka-1.kafka:9093"
    assert meta["consumerGroup"] == "outbound-scim.apply"
    assert meta["topic"] == "outbound-scim.changes"
    assert meta["lagThreshold"] == "200"
    assert meta["excludePersistentLag"] == "true"
    assert meta["allowIdleConsumers"] == "false"
    assert meta["sasl"] == "scram_sha512"
    assert meta["tls"] == "enable"
    auth = one(docs, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert refs == {"password": ("outbound-scim-kafka-user", "password"), "ca": ("kafka-cluster-ca-cert", "ca.crt")}
    [username] = auth["spec"]["env"]
    assert username["parameter"] == "username"
    assert username["name"] in env_of(docs)
    assert username["containerName"] == container(docs)["name"]


def test_keda_without_kafka_auth(chart: helm_python.Chart) -> None:
    docs = render(chart, {"keda": {"enabled": True}, "groupId": "g"})
    assert by_kind(docs, "TriggerAuthentication") == []
    [trigger] = one(docs, "ScaledObject")["spec"]["triggers"]
    assert "authenticationRef" not in trigger
    assert trigger["metadata"]["consumerGroup"] == "g.apply"
    assert {"sasl", "tls"}.isdisjoint(trigger["metadata"])


def test_hpa(chart: helm_python.Chart) -> None:
    spec = one(render(chart, HPA_FULL), "HorizontalPodAutoscaler")["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 6)
    assert {m["resource"]["name"] for m in spec["metrics"]} == {"cpu", "memory"}
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300


def test_pod_disruption_budget(chart: helm_python.Chart) -> None:
    docs = render(chart)
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    pdb = one(
        render(chart, {"podDisruptionBudget": {"maxUnavailable": None, "minAvailable": "50%"}}), "PodDisruptionBudget"
    )
    assert pdb["spec"] == {"minAvailable": "50%", "selector": pdb["spec"]["selector"]}
    assert "podDisruptionBudget" in render_error(chart, {"podDisruptionBudget": {"maxUnavailable": None}})
    assert by_kind(render(chart, {"podDisruptionBudget": {"enabled": False}}), "PodDisruptionBudget") == []


# ------------------------------------------------------------------------------ Service, Ingress, metrics


def test_service_exposes_metrics_and_admin_api(chart: helm_python.Chart) -> None:
    docs = render(chart)
    service = one(docs, "Service")
    [port] = service["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("http", 8080, "http")
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_ingress_routes_the_admin_api(chart: helm_python.Chart) -> None:
    ingress = one(render(chart, KEDA_FULL), "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "scim-admin.example.com"
    [path] = rule["http"]["paths"]
    assert path["path"] == "/tenants"
    assert path["backend"]["service"] == {"name": FULLNAME, "port": {"number": 8080}}
    assert ingress["spec"]["tls"] == [{"secretName": "scim-admin-tls", "hosts": ["scim-admin.example.com"]}]


def test_service_monitor(chart: helm_python.Chart) -> None:
    docs = render(chart, KEDA_FULL)
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = one(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def rules(chart: helm_python.Chart, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rule = one(render(chart, values), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    [group] = rule["spec"]["groups"]
    return {r["alert"]: r for r in group["rules"]}


def test_prometheus_rules(chart: helm_python.Chart) -> None:
    alerts = rules(chart, KEDA_FULL)
    assert set(alerts) == CORE_ALERTS | KAFKA_EXPORTER_ALERTS | {"Custom"}
    failing = alerts["OutboundScimTenantFailing"]
    assert 'outcome=~"rejected|unauthorized|failed|conflict"' in failing["expr"]
    assert failing["expr"].startswith("sum by (tenant, downstream) (rate(outbound_scim_changes_total{")
    assert failing["expr"].endswith("> 0")
    assert failing["for"] == "10m"
    assert alerts["OutboundScimTenantUnauthorized"]["expr"].endswith(
        f'outbound_scim_tenant_unauthorized{{job="{FULLNAME}",namespace="{NAMESPACE}"}}) == 1'
    )
    assert alerts["OutboundScimCircuitOpen"]["expr"].endswith(") == 2")
    assert alerts["OutboundScimCircuitOpen"]["for"] == "15m"
    assert "increase(outbound_scim_parked_total{" in alerts["OutboundScimParkedGrowing"]["expr"]
    assert "outbound_scim_dead_letters_total" in alerts["OutboundScimDeadLetters"]["expr"]
    assert "deriv(sum(max by (partition) (outbound_scim_consumer_lag{" in alerts["OutboundScimLagGrowing"]["expr"]
    assert alerts["OutboundScimLagGrowing"]["for"] == "15m"
    assert alerts["OutboundScimChangesDelayed"]["expr"].endswith("> 300")
    stalled = alerts["OutboundScimIntakeStalled"]["expr"]
    assert 'kafka_consumergroup_lag{job="kafka-exporter",consumergroup="outbound-scim.rekey"}' in stalled
    assert "rate(outbound_scim_events_total{" in stalled


def test_prometheus_rules_read_exported_metrics_of_this_release(chart: helm_python.Chart) -> None:
    exported = exported_series()
    release = (("job", "=", FULLNAME), ("namespace", "=", NAMESPACE))
    for name, alert in rules(chart, KEDA_FULL).items():
        if name == "Custom":
            continue
        found = selectors(alert["expr"])
        assert found, name
        for selector in found:
            if selector.name.startswith("kafka_"):
                assert name in KAFKA_EXPORTER_ALERTS, f"{name} needs kafka_exporter"
                continue
            # `up` is written by Prometheus for every scrape target; everything else comes from the service
            assert selector.name == "up" or selector.name in exported, (
                f"{name} uses {selector.name}, which the service does not export"
            )
            assert selector.matchers[:2] == release, f"{name}: {selector}"


def test_prometheus_rule_annotations_link_the_runbook(chart: helm_python.Chart) -> None:
    for name, alert in rules(chart, KEDA_FULL).items():
        if name == "Custom":
            continue
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        annotations = alert["annotations"]
        assert annotations["summary"], name
        assert annotations["description"], name
        assert annotations["runbook_url"] == f"{RUNBOOK_BASE}#{name.lower()}"
    # without a base URL there is nothing to link to
    for alert in rules(chart, {"prometheusRule": {"enabled": True}}).values():
        assert "runbook_url" not in alert["annotations"]


def test_prometheus_rules_without_kafka_exporter(chart: helm_python.Chart) -> None:
    alerts = rules(chart, {"prometheusRule": {"enabled": True}})
    assert set(alerts) == CORE_ALERTS
    assert "kafka_" not in str(alerts)


def test_prometheus_rule_thresholds_and_selectors(chart: helm_python.Chart) -> None:
    alerts = rules(
        chart,
        {
            "groupId": "scim-prod",
            "prometheusRule": {
                "enabled": True,
                "selector": 'service="scim"',
                "lagThreshold": 0,
                "oldestUnfinishedAgeSeconds": 600,
                "kafkaExporter": {"enabled": True, "lagThreshold": 50},
            },
        },
    )
    assert all(
        s.matchers[0] == ("service", "=", "scim")
        for a in alerts.values()
        for s in selectors(a["expr"])
        if not s.name.startswith("kafka_")
    )
    assert alerts["OutboundScimLagGrowing"]["expr"].split("\n")[0].endswith("> 0")
    assert alerts["OutboundScimChangesDelayed"]["expr"].endswith("> 600")
    growing = alerts["OutboundScimIntakeLagGrowing"]["expr"]
    assert 'kafka_consumergroup_lag{consumergroup="scim-prod.rekey"}) > 50' in growing


def runbook_sections() -> dict[str, str]:
    """`## Name` section of docs/operations/runbook.md -> its text (GitHub anchors it as #name in lower case)."""
    parts = re.split(r"^## (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_every_alert_has_a_runbook_section(chart: helm_python.Chart) -> None:
    """Each alert the chart renders has a section of its own in the runbook, titled with its name."""
    sections = runbook_sections()
    for name in rules(chart, KEDA_FULL):
        if name == "Custom":
            continue
        assert name in sections, f"docs/operations/runbook.md has no '## {name}'"
        assert len(sections[name].split()) >= 40, f"the runbook of {name} is too thin"


def test_grafana_dashboard_config_map(chart: helm_python.Chart) -> None:
    docs = render(chart, KEDA_FULL)
    config_map = one(docs, "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "IAM"}
    assert json.loads(config_map["data"]["outbound-scim.json"]) == json.loads(DASHBOARD.read_text())
    assert by_kind(render(chart), "ConfigMap") == []


# ------------------------------------------------------------------------------------------- docs, notes


def test_notes(chart: helm_python.Chart) -> None:
    notes = next(text for path, text in render_raw(chart).items() if path.endswith("NOTES.txt"))
    assert f"rollout status deployment/{FULLNAME}" in notes
    assert f"get secret {FULLNAME}" in notes
    assert "Keycloak:   not configured" in notes
    assert "WARNING: plain http" not in notes
    notes = next(text for path, text in render_raw(chart, KEDA_FULL).items() if path.endswith("NOTES.txt"))
    assert "KEDA" in notes
    assert "get secret outbound-scim-admin" in notes
    assert "Keycloak:   https://sso.example.com (client outbound-scim in realm scim-admin, authoritative off)" in notes
    assert "CA bundle:  Secret corporate-ca, key bundle.pem" in notes
    notes = next(text for path, text in render_raw(chart, HPA_FULL).items() if path.endswith("NOTES.txt"))
    assert "WARNING: plain http is allowed to scim-mock.dev.svc, 127.0.0.1" in notes
    assert "CA bundle:  ConfigMap trust-bundle" in notes


def leaf_keys(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaf_keys(value, path + ".")
        else:
            yield path


def test_readme_documents_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))
    missing = [
        key
        for key in leaf_keys(values)
        if key not in documented and not any(key.startswith(d + ".") for d in documented)
    ]
    assert missing == []


def test_readme_config_examples_are_settings() -> None:
    readme = (CHART / "README.md").read_text()
    [row] = [line for line in readme.splitlines() if line.startswith("| `config` |")]
    named = set(re.findall(r"`([a-z_]+)`", row)) - {"config"}
    assert named
    assert named <= set(Settings.model_fields), named - set(Settings.model_fields)
