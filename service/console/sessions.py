"""Console sessions in signed cookies: no server memory, so any replica behind a load balancer reads any
replica's cookie (they share the signing key: console_secret, or one derived from the admin token).

A cookie holds who signed in, how, until when, and the session's CSRF secret; it is signed (HMAC, by
itsdangerous), not encrypted: it holds nothing secret but the CSRF value, which is only useful to a page
that can read the cookie, and the cookie is HttpOnly.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from itsdangerous import BadSignature, URLSafeSerializer

__all__ = ["SESSION_COOKIE", "Session", "SessionSigner", "derive_key"]

SESSION_COOKIE = "outbound_scim_console"
LOGIN_COOKIE = "outbound_scim_console_login"  # between the sign-in page and its POST, or Keycloak's redirect
LOGIN_MINUTES = 10.0
KEY_LABEL = b"outbound-scim console session key v1"

Via = Literal["token", "keycloak"]


def derive_key(console_secret: str | None, admin_token: str) -> bytes:
    """The signing key: console_secret as given, else an HMAC of the admin token under a fixed label (every
    replica has the same admin token, so every replica derives the same key; the token itself never signs)."""
    if console_secret:
        return console_secret.encode()
    return hmac.new(admin_token.encode(), KEY_LABEL, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Session:
    subject: str  # "admin" for the admin token, the Keycloak username otherwise
    via: Via
    expires: float  # epoch seconds
    csrf: str  # put in every form and checked on every POST

    def to_dict(self) -> dict[str, Any]:
        return {"sub": self.subject, "via": self.via, "exp": self.expires, "csrf": self.csrf}


class SessionSigner:
    """Issues and reads the console's cookies; `now` is passed in (epoch seconds) so expiry is testable."""

    def __init__(self, key: bytes, session_minutes: float) -> None:
        sha256 = {"digest_method": hashlib.sha256}
        self._sessions = URLSafeSerializer(key, salt="outbound-scim console session", signer_kwargs=sha256)
        self._logins = URLSafeSerializer(key, salt="outbound-scim console login", signer_kwargs=sha256)
        self._minutes = session_minutes

    def issue(self, subject: str, via: Via, now: float) -> tuple[Session, str]:
        session = Session(subject, via, now + self._minutes * 60, secrets.token_urlsafe(24))
        return session, self._sessions.dumps(session.to_dict())

    def read(self, cookie: str | None, now: float) -> Session | None:
        """The session, or None: no cookie, a bad signature, a malformed one, or expired."""
        data = _loads(self._sessions, cookie)
        if data is None:
            return None
        subject, via, expires, csrf = data.get("sub"), data.get("via"), data.get("exp"), data.get("csrf")
        if not (isinstance(subject, str) and via in ("token", "keycloak") and isinstance(csrf, str) and csrf):
            return None
        if not isinstance(expires, int | float) or expires <= now:
            return None
        return Session(subject, via, float(expires), csrf)

    def login_state(self, data: dict[str, str], now: float) -> str:
        """A short-lived cookie for the sign-in in progress: the login form's CSRF value, or Keycloak's
        pending login (state, nonce, PKCE verifier)."""
        return self._logins.dumps({**data, "exp": now + LOGIN_MINUTES * 60})

    def read_login_state(self, cookie: str | None, now: float) -> dict[str, str] | None:
        data = _loads(self._logins, cookie)
        if data is None or not isinstance(data.get("exp"), int | float) or data["exp"] <= now:
            return None
        return {k: v for k, v in data.items() if k != "exp" and isinstance(v, str)}


def _loads(serializer: URLSafeSerializer, cookie: str | None) -> dict[str, Any] | None:
    if not cookie:
        return None
    try:
        data = serializer.loads(cookie)
    except BadSignature:
        return None
    return data if isinstance(data, dict) else None
