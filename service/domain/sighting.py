"""What a backfill's listing of the downstream saw of one user: a `Sighting`, carried by its change. Pure.

A backfill lists the downstream's accounts once (service.pipeline.backfill) and tells each user's
change what the listing saw, so the applier spends one request per user instead of a lookup and a
write (docs/decisions/0007-backfill-one-request-per-user.md):

    ABSENT  no account carries the user's externalId or its userName: POST at once (a 409 still goes
            through the adoption rules: an account made since the listing is adopted or conflicts)
    OURS    exactly one account carries the user's externalId: link it, PATCH only what differs
    HELD    the userName is held by an account that is not provably ours (unowned, another owner's,
            or several): never POST blindly (a downstream that does not enforce unique userNames would
            get a second account); decide on live, verified lookups as after a 409

A sighting is only as good as the listing: it is trusted only when the listing was complete, it is
dropped on a replay (a replayed change looks the user up again), and a user with a stored link ignores
it (the stored link and its "last written" are newer knowledge).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# The attributes a sighting's OURS carries, as service.domain.changes.ATTRIBUTES (not imported: changes
# imports this module).
_ATTRIBUTES = ("userName", "givenName", "familyName", "email", "active")


class Seen(StrEnum):
    ABSENT = "absent"
    OURS = "ours"
    HELD = "held"


@dataclass(frozen=True, slots=True)
class Sighting:
    seen: Seen
    downstream_id: str | None = None  # OURS: the account
    values: dict[str, Any] = field(default_factory=dict)  # OURS: the five attributes the account holds

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"seen": self.seen.value}
        if self.downstream_id is not None:
            doc["id"] = self.downstream_id
            doc["values"] = self.values
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Sighting:
        seen = Seen(doc["seen"])
        if seen is Seen.OURS:
            downstream_id = doc["id"]
            if not isinstance(downstream_id, str) or not downstream_id:
                raise ValueError("a sighting of our account needs its id")
            values = {k: v for k, v in (doc.get("values") or {}).items() if k in _ATTRIBUTES}
            return cls(seen, downstream_id, values)
        return cls(seen)


ABSENT = Sighting(Seen.ABSENT)
HELD = Sighting(Seen.HELD)


@dataclass(frozen=True, slots=True)
class Account:
    """What the index keeps of one listed account (a few fields, not the resource: a listing can hold
    a million accounts)."""

    downstream_id: str
    external_id: str | None
    values: tuple[Any, ...]  # the five attributes, in _ATTRIBUTES order


class DownstreamIndex:
    """A complete listing of the downstream's accounts, indexed by externalId and by userName (ignoring
    case, as RFC 7643 compares userName)."""

    def __init__(self, accounts: Iterable[Account]) -> None:
        self._by_external_id: dict[str, list[Account]] = {}
        self._by_user_name: dict[str, list[Account]] = {}
        self.size = 0
        for account in accounts:
            self.size += 1
            if account.external_id:
                self._by_external_id.setdefault(account.external_id, []).append(account)
            user_name = account.values[0]
            if isinstance(user_name, str):
                self._by_user_name.setdefault(user_name.casefold(), []).append(account)

    def sight(self, user_id: str, user_name: str | None) -> Sighting | None:
        """What the listing says of this user; None when it says nothing usable (no userName, or several
        accounts carry the externalId): the applier then looks the user up as without a listing."""
        ours = self._by_external_id.get(user_id, [])
        if len(ours) == 1:
            account = ours[0]
            return Sighting(Seen.OURS, account.downstream_id, dict(zip(_ATTRIBUTES, account.values, strict=True)))
        if ours or not user_name:
            return None
        return HELD if user_name.casefold() in self._by_user_name else ABSENT


def account_of(resource: Mapping[str, Any], downstream_id: str) -> Account:
    """An index entry for a listed SCIM User (downstream_id: its id, already checked by the caller)."""
    name = resource.get("name")
    name = name if isinstance(name, Mapping) else {}
    emails = resource.get("emails")
    emails = [e for e in emails if isinstance(e, Mapping)] if isinstance(emails, list) else []
    primary = next((e for e in emails if e.get("primary")), emails[0] if emails else {})
    external_id = resource.get("externalId")
    return Account(
        downstream_id,
        external_id if isinstance(external_id, str) else None,
        (
            _text(resource.get("userName")),
            _text(name.get("givenName")),
            _text(name.get("familyName")),
            _text(primary.get("value")),
            resource.get("active", True) is True,
        ),
    )


def written_as_seen(wanted: Mapping[str, Any], seen: Mapping[str, Any]) -> dict[str, Any]:
    """What the sighted account holds, in the state's terms ("last written"): our value where the
    account's equals it as the downstream compares (userName and email ignoring case), else the
    account's. The plan then PATCHes exactly the attributes that differ."""
    return {
        attribute: wanted[attribute]
        if attribute in wanted and _same(attribute, wanted[attribute], seen.get(attribute))
        else seen.get(attribute)
        for attribute in _ATTRIBUTES
        if attribute in wanted or attribute in seen
    }


def _same(attribute: str, ours: Any, theirs: Any) -> bool:
    if attribute in ("userName", "email") and isinstance(ours, str) and isinstance(theirs, str):
        return ours.casefold() == theirs.casefold()
    return bool(ours == theirs)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value != "" else None
