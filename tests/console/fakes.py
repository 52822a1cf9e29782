"""Stand-ins for what the console reads besides the tenant service: the activity log and the Keycloak
sign-in (each satisfies the Protocol it stands for; mypy checks the assignments at the end)."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.console.context import KeycloakSignIn
from service.console.oidc import Identity, OidcRefused, PendingLogin
from service.domain.activity import ActivityEntry, ActivitySummary, ActivityView


@dataclass
class FakeActivity:
    """The activity log in memory: entries by (realm, downstream), newest last; summaries as set."""

    entries: list[ActivityEntry] = field(default_factory=list)
    summaries: dict[tuple[str, str], ActivitySummary] = field(default_factory=dict)

    def recent(self, realm: str, downstream: str, *, user: str | None = None, limit: int = 50) -> list[ActivityEntry]:
        mine = [e for e in reversed(self.entries) if (e.realm, e.downstream) == (realm, downstream)]
        if user:
            mine = [e for e in mine if e.subject == user or user.lower() in (e.name or "").lower()]
        return mine[:limit]

    def summary(self, realm: str, downstream: str, now: float) -> ActivitySummary:
        return self.summaries.get((realm, downstream), ActivitySummary())

    def record(self, entry: ActivityEntry) -> None:
        """As the activity log's sink too: what the tenant service records shows at once."""
        self.entries.append(entry)

    def downstreams(self) -> list[tuple[str, str]]:
        return sorted({(e.realm, e.downstream) for e in self.entries} | set(self.summaries))


@dataclass
class FakeOidc:
    """Keycloak's sign-in: `start` hands out a fixed state; `finish` checks it as the real one does."""

    identity: Identity = field(
        default_factory=lambda: Identity("sub-1", "alice", frozenset({"outbound-scim-operator"}))
    )
    refusal: OidcRefused | None = None
    redirects: list[str] = field(default_factory=list)

    async def start(self, redirect_uri: str) -> tuple[str, PendingLogin]:
        self.redirects.append(redirect_uri)
        return "https://keycloak.example/auth?state=state-1", PendingLogin("state-1", "nonce-1", "verifier-1")

    async def finish(self, *, code: str, state: str, redirect_uri: str, pending: PendingLogin) -> Identity:
        if state != pending.state:
            raise OidcRefused("bad_state", "the state does not match")
        if self.refusal is not None:
            raise self.refusal
        return self.identity


def _protocols() -> None:
    """Never called: mypy checks that each fake is what it stands for."""
    _activity: ActivityView = FakeActivity()
    _oidc: KeycloakSignIn = FakeOidc()
