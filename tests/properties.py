"""Hypothesis profiles. `ci` (the default) runs every property with the example count its test asks
for; `dev` (HYPOTHESIS_PROFILE=dev, what `make unit` sets) caps each at DEV_EXAMPLES, so the quick
loop stays quick while `make test` keeps the full search."""

from __future__ import annotations

import os

from hypothesis import settings

DEV_EXAMPLES = 100
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")

settings.register_profile("ci", deadline=None)
settings.register_profile("dev", deadline=None, max_examples=DEV_EXAMPLES)
settings.load_profile(PROFILE)


def examples(count: int) -> int:
    """A property's example count under the loaded profile (an explicit count would override the profile's)."""
    return min(count, DEV_EXAMPLES) if PROFILE == "dev" else count
