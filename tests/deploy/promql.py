"""PromQL reading for the deployment tests: which series a query selects, with which matchers.

Queries are parsed by promql-parser (the Prometheus grammar, in Rust), so a query Prometheus would
refuse fails the test. Grafana's variables are accepted where Grafana substitutes them: label variables
(`$job`, `${tenant}`) sit inside matcher strings, which PromQL reads as they are; the interval
variables (`$__rate_interval`, `$__range`, ...) stand for durations and are read as one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import promql_parser
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from service.metrics import Metrics

GRAFANA_DURATION = re.compile(r"\$\{?__\w+\}?")
MATCH_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}


@dataclass(frozen=True)
class Selector:
    """One series selector: `name{label op "value", ...}`."""

    name: str
    matchers: tuple[tuple[str, str, str], ...]

    def matcher(self, label: str) -> tuple[str, str] | None:
        for name, op, value in self.matchers:
            if name == label:
                return op, value
        return None


def parse(expr: str) -> promql_parser.Expr:
    """The query's syntax tree; raises ValueError on what Prometheus would refuse."""
    return promql_parser.parse(GRAFANA_DURATION.sub("5m", expr))


def selectors(expr: str) -> list[Selector]:
    """Every series selector of `expr`, in order."""
    found: list[Selector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = tuple((m.name, MATCH_OPS[str(m.op)], m.value) for m in node.matchers.matchers)
            found.append(Selector(node.name or "", matchers))

    promql_parser.walk(parse(expr), visit)
    return found


def metric_names(expr: str) -> set[str]:
    return {s.name for s in selectors(expr)}


def label_values_query(query: str) -> Selector | None:
    """The selector of a Grafana `label_values(metric{...}, label)` variable query, if it names one."""
    match = re.fullmatch(r"\s*label_values\(\s*(.*?)\s*,\s*(\w+)\s*\)\s*", query)
    if not match:
        return None
    [selector] = selectors(match.group(1))
    return selector


def exported_families() -> dict[str, set[str]]:
    """Each metric family the service registers -> the series names Prometheus scrapes from it.

    prometheus_client names a counter family without `_total` and an Info family without `_info`; the
    exposition adds them, and a histogram is scraped as `_bucket`, `_sum` and `_count`.
    """
    suffixes = {
        "counter": ["_total", "_created"],
        "histogram": ["_bucket", "_sum", "_count", "_created"],
        "info": ["_info"],
        "gauge": [""],
        "summary": ["", "_sum", "_count", "_created"],
    }
    return {
        family.name: {family.name + suffix for suffix in suffixes.get(family.type, [""])}
        for family in Metrics(CollectorRegistry()).registry.collect()
    }


def exported_series() -> set[str]:
    return set().union(*exported_families().values())


def series_labels() -> dict[str, set[str]]:
    """Exported series name -> its label names (`le` on histogram buckets; Info labels are its keys)."""
    metrics = Metrics(CollectorRegistry())
    families = exported_families()
    out: dict[str, set[str]] = {}
    for collector in vars(metrics).values():
        if not isinstance(collector, MetricWrapperBase):
            continue
        # prometheus_client keeps the label names privately; there is no public accessor
        labels = set(collector._labelnames)
        for series in families[collector._name]:
            out[series] = labels | ({"le"} if series.endswith("_bucket") else set())
    for family in metrics.registry.collect():
        if family.type == "info":
            out[family.name + "_info"] = {k for s in family.samples for k in s.labels}
    return out
