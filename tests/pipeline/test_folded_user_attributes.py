"""Changes folded into one write (apply_queued) forget what was last written of the user attributes they
touched, as of the built-in ones, so the shared write sends their newest values."""

from __future__ import annotations

from service.domain.changes import UserChange
from service.domain.state import UserState
from service.pipeline.applier import _unsure_of

WRITTEN = {"userName": "jdoe", "attributes.dept": "Ops", "attributes.title": "Rep"}


def folded(custom: dict[str, str | None], *, complete: bool = False) -> UserChange:
    return UserChange(
        "acme", "u-1", "upsert", 1, "USER_UPDATE", "e-1", user_attributes=custom, user_attributes_complete=complete
    )


def test_a_folded_change_forgets_the_user_attributes_it_named() -> None:
    """It named dept: dept is no longer known as written; title and userName still are."""
    state = UserState("d-1", dict(WRITTEN), written=dict(WRITTEN))
    assert _unsure_of(state, (folded({"dept": "Sales"}),)).written == {"userName": "jdoe", "attributes.title": "Rep"}


def test_a_folded_complete_listing_forgets_every_user_attribute() -> None:
    """A complete listing may have removed any user attribute: none is known as written any more."""
    state = UserState("d-1", dict(WRITTEN), written=dict(WRITTEN))
    assert _unsure_of(state, (folded({"dept": "Sales"}, complete=True),)).written == {"userName": "jdoe"}
