"""The operations docs' examples work with the chart: the production values render, the secrets they name
are created by the commands beside them, and every alert's runbook link lands on its runbook section."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from tests.test_docs import anchors

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "docs" / "operations" / "install.md"
RUNBOOK = ROOT / "docs" / "operations" / "runbook.md"
CHART = ROOT / "deploy" / "helm" / "outbound-scim"
CHART_README = CHART / "README.md"
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}


def yaml_blocks(text: str) -> Iterator[dict[str, Any]]:
    for block in re.findall(r"^```yaml\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        yield yaml.safe_load(block)


def production_values(path: Path) -> dict[str, Any]:
    [values] = [v for v in yaml_blocks(path.read_text()) if isinstance(v, dict) and "partitions" in v]
    return values


def render(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifests by kind (one of each in the production example), each validated against Kubernetes 1.30."""
    with helm_python.Chart.load(CHART) as chart:
        rendered = chart.render(values, name="outbound-scim", namespace="iam", is_install=True)
    docs = [d for p, t in sorted(rendered.items()) if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t) if d]
    for doc in docs:
        if doc["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(doc, "1.30.0", strict=True)
    return {d["kind"]: d for d in docs}


@pytest.mark.parametrize("path", [INSTALL, CHART_README], ids=["install", "chart-readme"])
def test_production_example_renders(path: Path) -> None:
    """The production values lint strictly and render what the text promises: KEDA 3..6 on the apply group,
    SASL_SSL with SCRAM-SHA-512 and a CA, monitoring, a PDB, resources, and no Secret of the chart's own."""
    values = production_values(path)
    report = helm_python.lint(CHART, values, strict=True, namespace="iam", kube_version="v1.30.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    kinds = render(values)
    assert {
        "ScaledObject",
        "TriggerAuthentication",
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
        "PodDisruptionBudget",
    } <= set(kinds)
    deployment = kinds["Deployment"]
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["OUTBOUND_SCIM_INTERNAL_PARTITIONS"]["value"] == "6"
    assert env["OUTBOUND_SCIM_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert env["OUTBOUND_SCIM_KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
    assert "OUTBOUND_SCIM_KAFKA_SSL_CAFILE" in env
    assert "secretKeyRef" in env["OUTBOUND_SCIM_KAFKA_SASL_PASSWORD"]["valueFrom"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    scaled = kinds["ScaledObject"]["spec"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (3, 6)
    [trigger] = scaled["triggers"]
    assert trigger["metadata"]["consumerGroup"] == "outbound-scim.apply"
    assert trigger["metadata"]["sasl"] == "scram_sha512"
    assert "Secret" not in kinds, "production keeps every secret outside the chart"


@pytest.mark.parametrize("path", [INSTALL, CHART_README], ids=["install", "chart-readme"])
def test_runbook_links_land_on_runbook_sections(path: Path) -> None:
    """Each alert's runbook_url, as the production values render it, is the runbook page plus the anchor
    of the alert's own section there."""
    runbook_url = production_values(path)["prometheusRule"]["runbookBaseUrl"]
    assert runbook_url.endswith("/docs/operations/runbook.md")
    rules = render(production_values(path))["PrometheusRule"]["spec"]["groups"][0]["rules"]
    sections = anchors(RUNBOOK)
    for rule in rules:
        base, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert base == runbook_url, rule["alert"]
        assert anchor == rule["alert"].lower() and anchor in sections, f"{rule['alert']}: no section #{anchor}"


def test_install_creates_every_secret_the_values_name() -> None:
    """Each Secret the production values reference is created by a command of the install page."""
    values = production_values(INSTALL)
    created = set(re.findall(r"create secret generic (\S+)", INSTALL.read_text()))
    referenced = {
        values["adminToken"]["existingSecret"],
        values["tokenKey"]["existingSecret"],
        values["kafka"]["sasl"]["existingSecret"],
        values["kafka"]["tls"]["caSecret"],
    }
    assert referenced <= created
