"""service.domain.capabilities: the operator's overrides over a ServiceProviderConfig, and what follows
from the result (PATCH or PUT of the full user, page sizes)."""

from __future__ import annotations

from typing import Any

import pytest

from service.domain.capabilities import NO_OVERRIDES, Overrides, effective, overrides_of, page_size, user_writes

SPC: dict[str, Any] = {
    "patch": {"supported": True},
    "filter": {"supported": True, "maxResults": 100},
    "bulk": {"supported": True, "maxOperations": 10, "maxPayloadSize": 1000},
}


def test_no_overrides_leave_the_config_as_served() -> None:
    """Without overrides the config is the downstream's own document."""
    assert effective(SPC, NO_OVERRIDES) is SPC


def test_overrides_replace_what_the_downstream_announces() -> None:
    """Each override sets its field; the rest of the document and the original stay as they were."""
    config = effective(SPC, Overrides(patch=False, filter=False, max_results=50, bulk=False))
    assert config["patch"] == {"supported": False}
    assert config["filter"] == {"supported": False, "maxResults": 50}
    assert config["bulk"] == {"supported": False, "maxOperations": 10, "maxPayloadSize": 1000}
    assert SPC["patch"] == {"supported": True}


def test_overrides_fill_in_sections_a_config_lacks() -> None:
    """A config without the section (or none readable: {}) gets it from the override."""
    assert effective({}, Overrides(patch=False, max_results=20)) == {
        "patch": {"supported": False},
        "filter": {"maxResults": 20},
    }


@pytest.mark.parametrize(
    ("config", "refused", "expected"),
    [
        ({"patch": {"supported": True}}, False, "patch"),
        ({"patch": {"supported": False}}, False, "put"),
        ({}, False, "patch"),  # a config that does not say: PATCH (a 405 switches over)
        ({"patch": {"supported": "no"}}, False, "patch"),
        ({"patch": {"supported": True}}, True, "put"),  # announced, but answered 405
    ],
)
def test_user_writes_follow_patch_support(config: dict[str, Any], refused: bool, expected: str) -> None:
    """PUT of the full user when PATCH is announced unsupported or was refused with 405, else PATCH."""
    assert user_writes(config, refused) == expected


@pytest.mark.parametrize(
    ("wanted", "config", "expected"),
    [
        (500, {"filter": {"maxResults": 100}}, 100),
        (50, {"filter": {"maxResults": 100}}, 50),
        (500, {}, 500),
        (500, {"filter": {"maxResults": 0}}, 500),
        (500, {"filter": {"maxResults": True}}, 500),
    ],
)
def test_page_size_never_exceeds_max_results(wanted: int, config: dict[str, Any], expected: int) -> None:
    """A listing asks for at most filter.maxResults per page; an unusable value is ignored."""
    assert page_size(wanted, config) == expected


def test_stored_overrides_read_back_and_unusable_values_are_not_set() -> None:
    """public() reads back as the same overrides; a wrong type or a non-positive page is ignored."""
    given = Overrides(patch=False, filter=True, max_results=100, bulk=False)
    assert overrides_of(given.public()) == given
    assert overrides_of({"patch": "false", "max_results": 0, "bulk": 1}) == NO_OVERRIDES
    assert overrides_of(None) == NO_OVERRIDES
