"""Just enough PromQL reading for the deployment tests: which series a query selects, with which matchers.

Not a parser: a lexer plus the few rules that tell a metric name from a function, an aggregation's
grouping labels, a keyword or a range. Grafana variables (`$job`, `${tenant}`, `$__rate_interval`) are
accepted wherever Grafana substitutes them. `selectors()` raises on what it cannot read (unbalanced
brackets, an unknown character) so that a typo fails the test instead of passing unread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from service.metrics import Metrics

# Keywords and binary operators spelled as words.
KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "atan2",
        "start",
        "end",
    }
)
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})

TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<variable>\$\{[^}]+\}|\$\w+|\[\[\w+\]\])
    | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:[smhdwy]|ms)*)
    | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
    | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,:@])
    | (?P<open>[({\[])
    | (?P<close>[)}\]])
    """,
    re.VERBOSE,
)
PAIRS = {"(": ")", "{": "}", "[": "]"}


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


def tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = TOKEN.match(expr, pos)
        if not match:
            raise ValueError(f"cannot read PromQL at {pos}: {expr[pos : pos + 30]!r} in {expr!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            out.append((kind, match.group()))
        pos = match.end()
    stack: list[str] = []
    for kind, text in out:
        if kind == "open":
            stack.append(PAIRS[text])
        elif kind == "close" and (not stack or stack.pop() != text):
            raise ValueError(f"unbalanced {text!r} in {expr!r}")
    if stack:
        raise ValueError(f"unclosed bracket in {expr!r}")
    return out


def _unquote(text: str) -> str:
    return text[1:-1] if text[:1] == "`" else re.sub(r"\\(.)", r"\1", text[1:-1])


def selectors(expr: str) -> list[Selector]:
    """Every series selector of `expr`, in order."""
    toks = tokens(expr)
    found: list[Selector] = []
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "open" and text == "[":  # a range or subquery: durations and variables only
            depth = 1
            while depth:
                i += 1
                depth += {"[": 1, "]": -1}.get(toks[i][1], 0)
            i += 1
            continue
        if kind != "ident":
            i += 1
            continue
        if text in GROUPING:
            i += 1
            if i < len(toks) and toks[i][1] == "(":  # the label list: not metric names
                while toks[i][1] != ")":
                    i += 1
            i += 1
            continue
        if text in KEYWORDS or following == "(" or following in ("by", "without"):
            # a keyword, a function, or an aggregation (its grouping may come before the parenthesis)
            i += 1
            continue
        matchers: list[tuple[str, str, str]] = []
        i += 1
        if following == "{":
            i += 1
            while toks[i][1] != "}":
                if toks[i][1] == ",":
                    i += 1
                    continue
                (k1, label), (k2, op), (k3, value) = toks[i : i + 3]
                if k1 != "ident" or k2 != "op" or k3 != "string":
                    raise ValueError(f"cannot read the matchers of {text} in {expr!r}")
                matchers.append((label, op, _unquote(value)))
                i += 3
            i += 1
        found.append(Selector(text, tuple(matchers)))
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
