"""`tenants enable --mapping FILE`: the file's list is sent as `mapping`, a rotation keeps the current
one, `none` goes back to the default, and a file that is not a JSON list is refused before any call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.cli import CLEARED, _parser, enable_body
from tests.test_cli import CURRENT, NEW_TOKEN

MAPPING = [{"source": "email", "target": "userName"}, {"source": "attributes.dept", "target": "title"}]


def test_the_file_is_sent_as_the_mapping_and_a_rotation_keeps_it(tmp_path: Path) -> None:
    """The list in the file is the body's `mapping`; a rotation without --mapping repeats the current one."""
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(MAPPING))
    args = _parser().parse_args(["tenants", "enable", "acme", "--mapping", str(path)])
    assert enable_body(CURRENT, {"mapping": args.mapping}, NEW_TOKEN)["mapping"] == MAPPING
    assert enable_body({**CURRENT, "mapping": MAPPING}, {}, NEW_TOKEN)["mapping"] == MAPPING


def test_none_goes_back_to_the_default() -> None:
    """`--mapping none` leaves `mapping` out of the body: the API's default mapping."""
    args = _parser().parse_args(["tenants", "enable", "acme", "--mapping", "none"])
    assert args.mapping is CLEARED
    assert "mapping" not in enable_body({**CURRENT, "mapping": MAPPING}, {"mapping": args.mapping}, NEW_TOKEN)


@pytest.mark.parametrize("content", ['{"source": "email"}', "not json", None])
def test_a_file_that_is_not_a_json_list_is_refused(tmp_path: Path, content: str | None) -> None:
    """An object, text that is not JSON, or a missing file: a usage error before any call."""
    path = tmp_path / "mapping.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit):
        _parser().parse_args(["tenants", "enable", "acme", "--mapping", str(path)])
