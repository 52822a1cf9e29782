"""What a downstream can do, decided from its ServiceProviderConfig and the operator's overrides. Pure.

Some applications advertise wrongly (PATCH announced but answered 405, filters announced but ignored,
a maxResults they do not enforce or enforce below what they announce). The operator states the truth
per tenant with `Overrides`; `effective` lays them over the document the downstream served, so every
reader of the config (lookups, bulk, paging, writes) sees the same corrected view.

- `patch` (patch.supported): false sends a user's updates as `PUT /Users/{id}` of the full user,
  and refuses group sync at enable (memberships would need whole member lists).
- `filter` (filter.supported): false makes lookups list every account and match here (a scan).
- `max_results` (filter.maxResults): the largest page a listing asks for (backfill, reconciliation,
  scans).
- `bulk` (bulk.supported): false never sends /Bulk, whatever the tenant's `bulk` option.
- `etag` (etag.supported): false sends user writes unconditionally; true sends them `If-Match` the
  version the server gave.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from service.domain import scim

UserWrites = Literal["patch", "put"]


@dataclass(frozen=True, slots=True)
class Overrides:
    """What the operator says the downstream supports, over what it announces (None: as announced)."""

    patch: bool | None = None
    filter: bool | None = None
    max_results: int | None = None
    bulk: bool | None = None
    etag: bool | None = None

    def public(self) -> dict[str, Any]:
        """The overrides that are set, as the enable body names them."""
        return {k: v for k, v in self.as_dict().items() if v is not None}

    def as_dict(self) -> dict[str, Any]:
        return {
            "patch": self.patch,
            "filter": self.filter,
            "max_results": self.max_results,
            "bulk": self.bulk,
            "etag": self.etag,
        }


NO_OVERRIDES = Overrides()


def overrides_of(doc: object) -> Overrides:
    """The overrides stored or shown as `public()` gave them; anything unusable reads as not set."""
    if not isinstance(doc, dict):
        return NO_OVERRIDES
    flags = {k: v if isinstance(v, bool) else None for k in ("patch", "filter", "bulk", "etag") for v in [doc.get(k)]}
    limit = doc.get("max_results")
    usable = isinstance(limit, int) and not isinstance(limit, bool) and limit > 0
    return Overrides(**flags, max_results=limit if usable else None)


def effective(config: dict[str, Any], overrides: Overrides) -> dict[str, Any]:
    """The ServiceProviderConfig with the overrides laid over it (`config` itself when there are none)."""
    if overrides == NO_OVERRIDES:
        return config
    result = copy.deepcopy(config)
    flags = (
        ("patch", overrides.patch),
        ("filter", overrides.filter),
        ("bulk", overrides.bulk),
        ("etag", overrides.etag),
    )
    for section, supported in flags:
        if supported is not None:
            _section(result, section)["supported"] = supported
    if overrides.max_results is not None:
        _section(result, "filter")["maxResults"] = overrides.max_results
    return result


def user_writes(config: dict[str, Any], patch_refused: bool) -> UserWrites:
    """How a linked user's changes are sent: PATCH, unless the (effective) config says PATCH is not
    supported, or the downstream answered a PATCH with 405 (it announced PATCH, but does not take it).
    A config that does not say is taken to support PATCH: it is mandatory in most deployments, and a
    405 switches the tenant over anyway."""
    section = config.get("patch")
    announced = section.get("supported") if isinstance(section, dict) else None
    return "put" if patch_refused or announced is False else "patch"


def etag_supported(config: dict[str, Any]) -> bool:
    """Whether writes are conditional: only when the (effective) config says `etag.supported: true`."""
    section = config.get("etag")
    return isinstance(section, dict) and section.get("supported") is True


def version_of(doc: object) -> str | None:
    """A resource's `meta.version` (its ETag), when the answer carries one."""
    meta = doc.get("meta") if isinstance(doc, dict) else None
    version = meta.get("version") if isinstance(meta, dict) else None
    return version if isinstance(version, str) and version else None


def page_size(wanted: int, config: dict[str, Any]) -> int:
    """A listing's page size: `wanted`, never above the downstream's filter.maxResults."""
    limit = scim.max_results(config)
    return wanted if limit is None else min(wanted, limit)


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    section = config.get(name)
    if not isinstance(section, dict):
        section = config[name] = {}
    return section
