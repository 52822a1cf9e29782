"""The docs hold together: links and anchors resolve, and the reference pages are the code's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scripts import docs

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(
    [ROOT / "README.md", ROOT / "deploy" / "helm" / "outbound-scim" / "README.md", *(ROOT / "docs").rglob("*.md")]
)
# Written with the admin API's contract, on its own schedule: links to them are checked once they exist.
API_PAGES = {ROOT / "docs" / "reference" / "api.md", ROOT / "docs" / "openapi.json"}
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def without_code(text: str) -> str:
    """Markdown minus fenced blocks, inline code and HTML comments: links there are not links."""
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.MULTILINE | re.DOTALL)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    return re.sub(r"(`+)[^`]*?\1", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = path.read_text()
    code_free = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.MULTILINE | re.DOTALL)
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", code_free, flags=re.MULTILINE):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    found |= set(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", text))
    return found


def links(path: Path) -> list[str]:
    return [target for target in LINK.findall(without_code(path.read_text())) if not re.match(r"[a-z]+:", target)]


def test_pages_are_found() -> None:
    """The check covers the README, the chart's README and every page under docs/."""
    names = {str(p.relative_to(ROOT)) for p in PAGES}
    assert {"README.md", "docs/architecture.md", "docs/operations/runbook.md", "docs/reference/settings.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    """Every relative link names a file or directory that exists, and its #anchor a heading or <a id> there."""
    broken = []
    for target in links(page):
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if resolved in API_PAGES and not resolved.exists():
            continue
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading or anchor #{anchor} in {resolved.relative_to(ROOT)}")
    assert broken == []


def test_slugs_follow_github() -> None:
    """Anchors are computed as GitHub computes them, duplicates numbered."""
    assert slug("4. Install, check, enable a realm") == "4-install-check-enable-a-realm"
    assert slug("Enable answers 404 or 401 (`not_found`, `unauthorized`)") == (
        "enable-answers-404-or-401-not_found-unauthorized"
    )
    assert slug("Enable-time checks of a realm's event settings") == "enable-time-checks-of-a-realms-event-settings"
    assert slug("See [the runbook](runbook.md)") == "see-the-runbook"


@pytest.mark.parametrize("path", sorted(docs.render()), ids=lambda p: p.name)
def test_reference_pages_match_the_code(path: Path) -> None:
    """docs/reference/{settings,metrics,cli}.md are what scripts/docs.py makes of the code today."""
    expected = docs.render()[path]
    current = path.read_text() if path.exists() else ""
    assert current == expected, f"{path.relative_to(ROOT)} differs from the code: run `make docs` and commit it"
