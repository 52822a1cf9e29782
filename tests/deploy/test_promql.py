"""The PromQL reader the deployment tests use: Grafana's variables read, malformed queries refused."""

from __future__ import annotations

import pytest

from tests.deploy.promql import Selector, selectors


def test_selectors_in_order_with_their_matchers() -> None:
    """Functions, aggregations, ranges and grouping labels are not series; matchers keep their operator."""
    expr = (
        'sum by (tenant) (rate(outbound_scim_changes_total{job=~"$job",outcome!="applied"}[$__rate_interval]))'
        ' / ignoring(outcome) sum(up{job="x"}) or vector(0)'
    )
    assert selectors(expr) == [
        Selector("outbound_scim_changes_total", (("job", "=~", "$job"), ("outcome", "!=", "applied"))),
        Selector("up", (("job", "=", "x"),)),
    ]


@pytest.mark.parametrize(
    ("expr", "error"),
    [
        ('rate(x{job="a"}[5m]', "unclosed left parenthesis"),
        ("x{job=a}", "expected string"),
        ('x{job="a"}[$range]', "unexpected character"),  # only Grafana's interval variables read as durations
    ],
)
def test_a_query_prometheus_would_refuse_raises(expr: str, error: str) -> None:
    """A typo fails the deployment tests instead of passing unread."""
    with pytest.raises(ValueError, match=error):
        selectors(expr)
