"""Named presets: what is known about a kind of downstream, chosen by the operator rather than guessed.

A preset sets a tenant's defaults for the options it names; an option given explicitly with the enable
wins over the preset. Each entry says what it changes and why, and the operations guide lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from service.scim.transport import UserLookup

PresetName = Literal["keycloak"]


@dataclass(frozen=True, slots=True)
class Preset:
    name: PresetName
    user_lookup: UserLookup
    changes: str  # what it changes, for the docs and the API description


PRESETS: dict[PresetName, Preset] = {
    "keycloak": Preset(
        "keycloak",
        user_lookup="userName",
        changes=(
            "Keycloak 26.7's SCIM API stores externalId but a filter on it finds nothing: an account not "
            "linked yet is looked up by userName and taken only when its externalId is ours (an account "
            "without one goes through the 409 adoption rules)"
        ),
    ),
}


def user_lookup(preset: PresetName | None, given: UserLookup | None) -> UserLookup:
    """The tenant's lookup: as given, else the preset's, else by externalId."""
    if given is not None:
        return given
    return PRESETS[preset].user_lookup if preset is not None else "externalId"
