"""The console's forms as the admin API's request models: what an operator typed, checked the same way a
PUT /tenants/{realm} body is (the model's own validation), never echoing the token back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from service.api.errors import InvalidRequest
from service.api.models import AuthView, EnableTenant, TenantView
from service.domain.mapping import DEFAULT_MAPPING

__all__ = ["AUTH_TYPES", "enable_request", "rotate_request"]

LIMITS = ("max_concurrency", "rate_limit_per_minute")


AUTH_TYPES = ("bearer", "basic", "oauth2_client_credentials")


def enable_request(form: Mapping[str, Any], *, backfill: bool = False) -> EnableTenant:
    """A new downstream from the enable form: base URL, credentials (a bearer token, HTTP Basic, or OAuth2
    client credentials, as `auth_type` says), delete policy, limits."""
    body: dict[str, Any] = {
        "base_url": _text(form, "base_url"),
        **credentials(form, _text(form, "auth_type") or "bearer"),
        "delete_policy": _text(form, "delete_policy") or "ignore",
        "backfill": backfill and form.get("backfill") == "on",
    }
    for name in LIMITS:
        body[name] = _number(form, name)
    return _validated(body)


def credentials(form: Mapping[str, Any], auth_type: str, kept: AuthView | None = None) -> dict[str, Any]:
    """The body's `token` or `auth` from the form's fields for `auth_type`; a rotation's form leaves the
    names (username, client id, token URL, scope, audience) as `kept` has them unless it gives new ones."""
    if auth_type == "bearer":
        return {"token": _text(form, "token") or None}
    if auth_type == "basic":
        username = _text(form, "username") or (kept.username if kept else None)
        return {"auth": {"type": "basic", "username": username, "password": _text(form, "password") or None}}
    if auth_type == "oauth2_client_credentials":
        auth: dict[str, Any] = {
            "type": auth_type,
            "token_url": _text(form, "token_url") or (kept.endpoint if kept else None),
            "client_id": _text(form, "client_id") or (kept.client_id if kept else None),
            "client_secret": _text(form, "client_secret") or None,
        }
        for name in ("scope", "audience"):
            if value := _text(form, name) or (getattr(kept, name) if kept else None):
                auth[name] = value
        return {"auth": auth}
    raise InvalidRequest(f"auth_type: one of {', '.join(AUTH_TYPES)}")


def rotate_request(view: TenantView, form: Mapping[str, Any]) -> EnableTenant:
    """The tenant as it is, with the new secret (and base URL): a rotation keeps every other setting."""
    mapping = view.mapping if view.mapping != DEFAULT_MAPPING.public() else None
    body: dict[str, Any] = {
        "base_url": _text(form, "base_url") or view.base_url,
        **credentials(form, view.auth.type, view.auth),
        "delete_policy": view.delete_policy.value,
        "max_concurrency": view.max_concurrency,
        "rate_limit_per_minute": view.rate_limit_per_minute,
        "realm_id": view.realm_id,
        "reconcile_interval_minutes": view.reconcile_interval_minutes,
        "groups": view.groups,
        "group_display": view.group_display.value,
        "group_flatten": view.group_flatten,
        "group_paths": view.group_paths,
        "group_pattern": view.group_pattern,
        "group_members_per_request": view.group_members_per_request,
        "bulk": view.bulk,
        "preset": view.preset,
        "user_lookup": view.user_lookup,
        "capabilities": view.capabilities or None,
        "mapping": mapping,
    }
    return _validated(body)


def _validated(body: dict[str, Any]) -> EnableTenant:
    """As the API validates a body (from JSON, so enums are their values); the message names fields, never
    values (the token is one)."""
    try:
        return EnableTenant.model_validate_json(json.dumps(body))
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        raise InvalidRequest("; ".join(problems)) from None


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _number(form: Mapping[str, Any], name: str) -> int | None:
    text = _text(form, name)
    if not text:
        return None
    if not text.isdigit():
        raise InvalidRequest(f"{name}: a whole number, or empty for the default")
    return int(text)
