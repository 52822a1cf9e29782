"""README.md (README sections: install, dashboard, runbook): its examples work with the chart."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "README.md"
README = ROOT / "README.md"
CHART = ROOT / "deploy" / "helm" / "outbound-scim"
CHART_README = CHART / "README.md"
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}


def prose(text: str) -> str:
    """The Markdown without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def headings(text: str) -> list[tuple[int, str]]:
    return [(len(m.group(1)), m.group(2).strip()) for m in re.finditer(r"^(#{1,6}) (.+)$", prose(text), re.MULTILINE)]


def slug(title: str) -> str:
    """GitHub's heading anchor."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"no '## {title}'"
    return match.group(1)


def yaml_blocks(text: str) -> Iterator[dict[str, Any]]:
    for block in re.findall(r"^```yaml\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        yield yaml.safe_load(block)


def production_values(path: Path) -> dict[str, Any]:
    [values] = [v for v in yaml_blocks(path.read_text()) if isinstance(v, dict) and "partitions" in v]
    return values


@pytest.fixture(scope="module")
def text() -> str:
    return OPERATIONS.read_text()


def test_readme_has_the_operations_sections(text: str) -> None:
    """Install with Helm, Grafana dashboard and Runbook are level-2 sections of the README, in that order."""
    titles = [t for level, t in headings(text) if level == 2]
    positions = [titles.index(t) for t in ("Install with Helm", "Grafana dashboard", "Runbook")]
    assert positions == sorted(positions)


def test_links_resolve(text: str) -> None:
    """In-page links point at a heading or an explicit anchor here, or at a README heading (after the merge)."""
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', text))
    anchors |= {slug(t) for _, t in headings(text)}
    anchors |= {slug(t) for _, t in headings(README.read_text())}
    for target in re.findall(r"\]\(#([^)]+)\)", text):
        assert target in anchors, f"link #{target} leads nowhere"
    for path in re.findall(r"\]\((?!https?:|#)([^)#]+)", text):
        assert (ROOT / path).exists(), path


@pytest.mark.parametrize("path", [OPERATIONS, CHART_README], ids=["operations", "chart-readme"])
def test_production_example_renders(path: Path) -> None:
    values = production_values(path)
    report = helm_python.lint(CHART, values, strict=True, namespace="iam", kube_version="v1.30.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    with helm_python.Chart.load(CHART) as chart:
        rendered = chart.render(values, name="outbound-scim", namespace="iam", is_install=True)
    docs = [d for p, t in sorted(rendered.items()) if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t) if d]
    kinds = {d["kind"]: d for d in docs}
    for doc in docs:
        if doc["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(doc, "1.30.0", strict=True)
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
    rules = kinds["PrometheusRule"]["spec"]["groups"][0]["rules"]
    assert all(r["annotations"]["runbook_url"].endswith(f"#runbook-{r['alert'].lower()}") for r in rules)


def test_install_section(text: str) -> None:
    install = section(text, "Install with Helm")
    for needle in (
        "helm upgrade --install",
        "deploy/helm/outbound-scim",
        "kubectl -n iam create secret",
        "outbound-scim gen-key",
        "rollout status",
        "tenants enable",
    ):
        assert needle in install, needle
    values = production_values(OPERATIONS)
    secrets = re.findall(r"create secret generic (\S+)", install)
    referenced = {
        values["adminToken"]["existingSecret"],
        values["tokenKey"]["existingSecret"],
        values["kafka"]["sasl"]["existingSecret"],
        values["kafka"]["tls"]["caSecret"],
    }
    assert referenced <= set(secrets), "every secret the values name is created in the commands"


def test_grafana_section(text: str) -> None:
    grafana = section(text, "Grafana dashboard")
    assert "deploy/grafana/outbound-scim.json" in grafana
    assert "Import" in grafana
    assert "grafanaDashboard.enabled" in grafana


@pytest.mark.parametrize(
    "needle",
    [
        "GET /tenants/{realm}/parked",
        "POST /tenants/{realm}/parked/replay",
        "GET /dead-letters",
        "POST /dead-letters/replay",
        "outbound-scim parked list <realm>",
        "outbound-scim parked replay <realm>",
        "outbound-scim dead-letters list",
        "outbound-scim dead-letters replay",
    ],
)
def test_replay_interfaces_are_described(text: str, needle: str) -> None:
    assert needle in section(text, "Runbook")


@pytest.mark.parametrize(
    ("anchor", "needles"),
    [
        ("runbook-enable-not-found-unauthorized", ["not_found", "unauthorized", "/scim/v2", "scope"]),
        ("runbook-401-on-every-push", ["outbound-scim tenants enable <realm>", "replayed automatically"]),
        ("runbook-409-conflict", ["externalId", "userName", "conflict", "replay"]),
        ("runbook-keycloak-restart", ["flush", "KAFKA_ADMIN_TOPIC", "Event listeners", "reconciliation"]),
    ],
)
def test_troubleshooting_entries(text: str, anchor: str, needles: list[str]) -> None:
    match = re.search(
        rf'<a id="{anchor}"></a>\n### [^\n]+\n(.*?)(?=^<a id=|^## |\Z)', text, flags=re.MULTILINE | re.DOTALL
    )
    assert match, anchor
    for needle in needles:
        assert needle in match.group(1), f"{anchor}: {needle}"
