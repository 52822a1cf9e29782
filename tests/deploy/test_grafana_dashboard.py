"""The Grafana dashboard (deploy/grafana/outbound-scim.json): its queries read only what the service exports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.promql import (
    exported_families,
    exported_series,
    label_values_query,
    selectors,
    series_labels,
)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_PATH = ROOT / "deploy" / "grafana" / "outbound-scim.json"
CHART_COPY = ROOT / "deploy" / "helm" / "outbound-scim" / "dashboards" / "outbound-scim.json"
DATASOURCE_UIDS = {"${datasource}", "$datasource"}
# label filters every query applies: the dashboard's variables
FILTERS = {"namespace": "$namespace", "job": "$job"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    board = json.loads(DASHBOARD_PATH.read_text())
    assert isinstance(board, dict), "a dashboard is a JSON object"
    return board


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels of a collapsed row


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every panel target."""
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def test_dashboard_basics(dashboard: dict[str, Any]) -> None:
    assert dashboard["title"]
    assert dashboard["uid"] == "outbound-scim"
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["id"] is None, "an exported id clashes on import"
    assert "__inputs" not in dashboard or dashboard["__inputs"] == [], "the datasource is a template variable"


def test_template_variables(dashboard: dict[str, Any]) -> None:
    found = variables(dashboard)
    datasource = found["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    tenant = found["tenant"]
    assert tenant["type"] == "query"
    assert tenant["datasource"]["uid"] in DATASOURCE_UIDS
    selector = label_values_query(tenant["query"])
    assert selector is not None
    assert selector.name == "outbound_scim_changes_total"
    assert tenant["query"].replace(" ", "").endswith(",tenant)")
    assert tenant["includeAll"] is True
    assert tenant["allValue"] == ".*"
    downstream = found["downstream"]
    assert label_values_query(downstream["query"]) is not None
    assert 'tenant=~"$tenant"' in downstream["query"], "a realm's downstreams, for the tenants chosen"
    assert downstream["query"].replace(" ", "").endswith(",downstream)")
    assert (downstream["includeAll"], downstream["allValue"]) == (True, ".*")
    for name in FILTERS:
        assert found[name]["type"] == "query"
        assert found[name]["allValue"] == ".*", "All must also match series without the label"


def test_variable_queries_read_exported_metrics(dashboard: dict[str, Any]) -> None:
    exported = exported_series()
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        selector = label_values_query(variable["query"])
        assert selector is not None, f"${variable['name']}: expected label_values(<metric>, <label>)"
        assert selector.name in exported, variable["query"]
        assert variable.get("definition", variable["query"]) == variable["query"]


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_every_panel_has_a_title_and_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    for panel in all_panels(dashboard):
        assert panel.get("title"), f"panel {panel['id']} has no title"
        assert panel["datasource"]["uid"] in DATASOURCE_UIDS, panel["title"]
        assert panel["datasource"]["type"] == "prometheus", panel["title"]
        if panel["type"] == "row":
            assert not panel.get("targets"), panel["title"]
            continue
        assert panel.get("targets"), f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] in DATASOURCE_UIDS, panel["title"]
            assert target["expr"].strip(), panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_every_query_reads_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    exported = exported_series()
    for title, expr in queries(dashboard):
        found = selectors(expr)
        assert found, f"{title}: no metric in {expr}"
        for selector in found:
            assert selector.name in exported, f"{title}: {selector.name} is not exported by service.metrics"


def test_queries_apply_the_variables(dashboard: dict[str, Any]) -> None:
    """Every selector filters by namespace and job, and by tenant and downstream when the metric has those
    labels (a realm's several downstream apps are told apart)."""
    labels = series_labels()
    for title, expr in queries(dashboard):
        for selector in selectors(expr):
            wanted = dict(FILTERS)
            for label in ("tenant", "downstream"):
                if label in labels[selector.name]:
                    wanted[label] = f"${label}"
            for label, variable in wanted.items():
                assert selector.matcher(label) == ("=~", variable), (
                    f"{title}: {selector.name} lacks {label}=~{variable}"
                )
            for label, _, _ in selector.matchers:
                assert label in labels[selector.name] | set(FILTERS), f"{title}: {selector.name} has no label {label}"


def test_every_exported_metric_is_on_the_dashboard(dashboard: dict[str, Any]) -> None:
    used = {selector.name for _, expr in queries(dashboard) for selector in selectors(expr)}
    missing = [family for family, series in exported_families().items() if not series & used]
    assert missing == []


@pytest.mark.parametrize(
    ("needle", "what"),
    [
        ("histogram_quantile(0.50", "p50 latency"),
        ("histogram_quantile(0.95", "p95 latency"),
        ("histogram_quantile(0.99", "p99 latency"),
        ("sum by (outcome) (rate(outbound_scim_changes_total", "changes by outcome"),
        ("sum by (outcome) (rate(outbound_scim_events_total", "events by outcome"),
        (
            "sum by (tenant, downstream, status_class) (rate(outbound_scim_scim_requests_total",
            "SCIM errors by downstream and class",
        ),
        ("max by (partition) (outbound_scim_consumer_lag", "lag per partition"),
        ("max by (tenant, downstream) (outbound_scim_circuit_state", "breaker state per downstream"),
        ("max by (tenant, downstream) (outbound_scim_tenant_unauthorized", "unauthorized downstreams"),
    ],
)
def test_required_views(dashboard: dict[str, Any], needle: str, what: str) -> None:
    assert any(needle in expr for _, expr in queries(dashboard)), what


def test_panels_fit_the_grid(dashboard: dict[str, Any]) -> None:
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))


def test_the_chart_ships_the_same_dashboard() -> None:
    """The chart's optional Grafana ConfigMap embeds a copy (Helm reads files inside the chart only)."""
    assert CHART_COPY.read_bytes() == DASHBOARD_PATH.read_bytes(), (
        f"copy {DASHBOARD_PATH.relative_to(ROOT)} to {CHART_COPY.relative_to(ROOT)}"
    )
