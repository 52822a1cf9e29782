"""Named presets: what is known about a kind of downstream, chosen by the operator rather than guessed.

A preset sets a tenant's defaults for the options it names; an option given explicitly with the enable
wins over the preset. Each entry says what it changes and why, and the operations guide lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from service.domain.capabilities import NO_OVERRIDES, Overrides
from service.scim.transport import UserLookup

PresetName = Literal["keycloak", "django-scim2"]
PRESET_NAMES: tuple[PresetName, ...] = ("keycloak", "django-scim2")


@dataclass(frozen=True, slots=True)
class Preset:
    name: PresetName
    user_lookup: UserLookup
    changes: str  # what it changes, for the docs and the API description
    capabilities: Overrides = NO_OVERRIDES  # what it says over the app's ServiceProviderConfig


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
    "django-scim2": Preset(
        "django-scim2",
        user_lookup="externalId",
        capabilities=Overrides(patch=False),
        changes=(
            "django-scim2 0.23 announces PATCH but answers 501 to the operations a rename or an emptied "
            "attribute needs (replace of displayName or name.formatted, any remove): a user's changes are "
            "sent as a PUT of the full user, and group sync is refused at enable (member removals by value "
            "filter are 501 too). It announces filters unsupported, so lookups scan and match externalId here"
        ),
    ),
}


def user_lookup(preset: PresetName | None, given: UserLookup | None) -> UserLookup:
    """The tenant's lookup: as given, else the preset's, else by externalId."""
    if given is not None:
        return given
    return PRESETS[preset].user_lookup if preset is not None else "externalId"


def capabilities(preset: PresetName | None, given: Overrides) -> Overrides:
    """The tenant's overrides: each one as given, else the preset's, else none (as announced)."""
    if preset is None:
        return given
    ours = PRESETS[preset].capabilities.as_dict()
    merged = {k: v if v is not None else ours[k] for k, v in given.as_dict().items()}
    return Overrides(**merged)


def preset_of(value: object) -> PresetName | None:
    """A stored preset name, None when it names no preset this version knows."""
    return next((name for name in PRESET_NAMES if name == value), None)
