"""`make docs`: write the reference pages of docs/reference/ from the code, so they cannot drift.

- settings.md: the fields of `service.settings.Settings` (type, default, description);
- metrics.md: the metric families `service.metrics.Metrics` registers (type, labels, help);
- cli.md: the argparse parser of `service.cli` (commands, arguments, help).

`python -m scripts.docs --check` writes nothing and exits 1 naming the pages that differ from the code;
`tests/test_docs.py` does the same comparison.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from service import cli
from service.metrics import Metrics
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"
ENV_PREFIX = "OUTBOUND_SCIM_"


def header(source: str) -> str:
    return f"<!-- Generated from {source} by `make docs` (scripts/docs.py). Do not edit by hand. -->\n"


def cell(text: str) -> str:
    """Text fit for one Markdown table cell: one line, no pipe, no raw HTML."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def code(value: str) -> str:
    return f"`{value}`" if value else "empty"


# ---------------------------------------------------------------------------------------------- settings


def type_name(annotation: Any) -> str:
    """`str`, `int`, a list of literal choices, `secret`: what an operator may write in the variable."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return type_name(args[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if annotation is SecretStr:
        return "secret"
    return getattr(annotation, "__name__", str(annotation))


def bounds(field: FieldInfo) -> str:
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    found = [
        f"{sign} {number(getattr(m, key))}"
        for m in field.metadata
        for key, sign in signs.items()
        if getattr(m, key, None) is not None
    ]
    return ", ".join(found)


def number(value: float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def default(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    value = field.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float):
        return f"`{number(value)}`"
    return code(str(value))


def settings_page() -> str:
    rows = []
    for name, field in Settings.model_fields.items():
        kind = type_name(field.annotation)
        limit = bounds(field)
        rows.append(
            f"| `{ENV_PREFIX}{name.upper()}` | {kind}{', ' + cell(limit) if limit else ''} | {default(field)} "
            f"| {cell(field.description or '')} |"
        )
    return (
        header("service/settings.py")
        + "\n# Settings\n\n"
        + "Environment variables, one prefix (`OUTBOUND_SCIM_`), read at start; a bad value refuses to start. "
        "The internal topics are created at start when missing. With Helm, the chart renders most of them "
        "from its values and takes the rest under `config` "
        "([chart README](../../deploy/helm/outbound-scim/README.md)).\n\n"
        + "| variable | type | default | meaning |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


# ----------------------------------------------------------------------------------------------- metrics


def exposed_name(name: str, kind: str) -> str:
    """The name Prometheus scrapes: counters end in `_total`, info metrics in `_info`."""
    suffix = {"counter": "_total", "info": "_info"}.get(kind, "")
    return name + suffix


def metrics_page() -> str:
    metrics = Metrics(CollectorRegistry())
    wrappers = {m._name: m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}
    rows = []
    for family in metrics.registry.collect():
        wrapper = wrappers[family.name]
        labels = list(wrapper._labelnames) or sorted({k for s in family.samples for k in s.labels})
        rows.append(
            f"| `{exposed_name(family.name, family.type)}` | {family.type} "
            f"| {', '.join(f'`{label}`' for label in labels)} | {cell(family.documentation)} |"
        )
    intro = cell((sys.modules[Metrics.__module__].__doc__ or "").split("\n\n", 1)[-1])
    return (
        header("service/metrics.py")
        + "\n# Metrics\n\n"
        + f"Served at `/metrics` in the Prometheus text format. {intro}\n\n"
        + "What the label values mean and which alert reads which metric: "
        "[operations/observability.md](../operations/observability.md).\n\n"
        + "| metric | type | labels | meaning |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


# --------------------------------------------------------------------------------------------------- CLI


@contextmanager
def environment_without(*names: str) -> Iterator[None]:
    """The parser reads some defaults from the environment: document the defaults, not this shell."""
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                found.append((choice.dest, choice.help or "", action.choices[choice.dest]))
    return found


def arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction) and a.help != argparse.SUPPRESS
    ]


def positional_name(action: argparse.Action) -> str:
    """A positional's metavar (or dest) upper-cased; "" for a tuple metavar, which names several values."""
    name = action.metavar or action.dest
    return name.upper() if isinstance(name, str) else ""


def usage(action: argparse.Action) -> str:
    if not action.option_strings:
        return positional_name(action)
    option = max(action.option_strings, key=len)
    if action.nargs == 0:
        return f"[{option}]"
    metavar = action.metavar or action.dest.upper()
    return f"[{option} {metavar}]" if not action.required else f"{option} {metavar}"


def help_text(action: argparse.Action) -> str:
    text = action.help or ""
    if "%" in text:
        text = text % dict(vars(action))
    if action.choices:
        text += (" " if text else "") + "(" + " / ".join(f"`{c}`" for c in action.choices) + ")"
    return text


def argument_default(action: argparse.Action) -> str:
    if action.nargs == 0 or action.default in (None, argparse.SUPPRESS):
        return ""
    return f"`{action.default}`"


def argument_rows(actions: list[argparse.Action]) -> list[str]:
    rows = []
    for action in actions:
        name = ", ".join(action.option_strings) or positional_name(action)
        rows.append(f"| `{name}` | {argument_default(action)} | {cell(help_text(action))} |")
    return rows


def command_sections(
    parser: argparse.ArgumentParser, words: list[str], inherited: list[str], level: int
) -> Iterator[str]:
    for name, summary, sub in subcommands(parser):
        own = arguments(sub)
        synopsis = [*words, *inherited, name, *(usage(a) for a in own)]
        children = subcommands(sub)
        if children:
            synopsis.append("<action>")
        yield f"{'#' * level} {' '.join([*words, name])}\n\n"
        yield cell(summary) + ("\n\n" + cell(sub.description) if sub.description else "") + "\n"
        yield f"\n```\n{' '.join(synopsis)}\n```\n"
        if own:
            yield "\n| argument | default | meaning |\n|---|---|---|\n" + "\n".join(argument_rows(own)) + "\n"
        yield "\n"
        if children:
            options = [usage(a) for a in own if a.option_strings]
            yield from command_sections(sub, [*words, name], options, level + 1)


def cli_page() -> str:
    with environment_without("OUTBOUND_SCIM_API_URL"):
        parser = cli._parser()
    intro = (cli.__doc__ or "").split("\n\n", 1)[-1]
    body = "".join(command_sections(parser, [parser.prog], [], 2))
    return (
        header("service/cli.py")
        + "\n# Command line\n\n"
        + f"`{parser.prog}` is installed with the package (`pip install .`); `python -m service` runs the same. "
        f"{cell(intro)} Commands that call the admin API read its URL from `--api-url` (default: "
        "`OUTBOUND_SCIM_API_URL`, else `http://127.0.0.1:8080`) and its bearer token from "
        "`OUTBOUND_SCIM_ADMIN_TOKEN`.\n\n" + body.rstrip() + "\n"
    )


# ------------------------------------------------------------------------------------------------- pages

PAGES: dict[str, Callable[[], str]] = {
    "settings.md": settings_page,
    "metrics.md": metrics_page,
    "cli.md": cli_page,
}


def render() -> dict[Path, str]:
    return {REFERENCE / name: page() for name, page in PAGES.items()}


def stale(pages: dict[Path, str]) -> list[Path]:
    return [path for path, text in pages.items() if not path.exists() or path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page differs from the code")
    args = parser.parse_args(argv)
    pages = render()
    differing = stale(pages)
    if args.check:
        for path in differing:
            print(f"{path.relative_to(ROOT)} differs from the code: run `make docs`")
        return 1 if differing else 0
    REFERENCE.mkdir(parents=True, exist_ok=True)
    for path in differing:
        path.write_text(pages[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
