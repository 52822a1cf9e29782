"""The CLI's enable / rotate body: the current tenant, overridden only by the options the operator passed."""

from __future__ import annotations

import pytest

from service.cli import CLEARED, _dead_letters, _parser, enable_body

CURRENT = {
    "realm": "acme",
    "status": "enabled",
    "circuit": "closed",
    "base_url": "https://a.example/v2",
    "delete_policy": "deactivate",
    "max_concurrency": 4,
    "rate_limit_per_minute": 180,
    "realm_id": "id-acme",
    "reconcile_interval_minutes": 60,
    "updated_at": "2025-01-01T00:00:00+00:00",
}
NEW_TOKEN = "token-2"


def given(*argv: str) -> dict[str, object]:
    """The tenant fields parsed from `tenants enable acme <argv>` (None: not passed)."""
    args = _parser().parse_args(["tenants", "enable", "acme", *argv])
    return {
        k: getattr(args, k)
        for k in (
            "base_url",
            "delete_policy",
            "max_concurrency",
            "rate_limit_per_minute",
            "realm_id",
            "reconcile_interval_minutes",
        )
    }


def test_a_rotation_with_only_a_token_keeps_every_field() -> None:
    """Nothing passed: the body repeats the current tenant's fields (not its status or timestamps)."""
    assert enable_body(CURRENT, given(), NEW_TOKEN) == {
        "base_url": "https://a.example/v2",
        "delete_policy": "deactivate",
        "max_concurrency": 4,
        "rate_limit_per_minute": 180,
        "realm_id": "id-acme",
        "reconcile_interval_minutes": 60,
        "token": NEW_TOKEN,
    }


def test_options_passed_override_and_none_clears() -> None:
    """Passed options replace the current value; `none` leaves the field out, so the API applies its default."""
    body = enable_body(
        CURRENT,
        given(
            "--delete-policy",
            "delete",
            "--max-concurrency",
            "none",
            "--reconcile-interval-minutes",
            "0.5",
            "--realm-id",
            "NONE",
        ),
        NEW_TOKEN,
    )
    assert body == {
        "base_url": "https://a.example/v2",
        "delete_policy": "delete",
        "rate_limit_per_minute": 180,
        "reconcile_interval_minutes": 0.5,
        "token": NEW_TOKEN,
    }


def test_enabling_sends_only_what_was_passed() -> None:
    """No current tenant: the options passed, nothing else (the API defaults the rest)."""
    body = enable_body(None, given("--base-url", "https://b.example/v2", "--rate-limit-per-minute", "60"), NEW_TOKEN)
    assert body == {"base_url": "https://b.example/v2", "rate_limit_per_minute": 60, "token": NEW_TOKEN}


@pytest.mark.parametrize(
    "argv",
    [
        ["--max-concurrency", "0"],
        ["--reconcile-interval-minutes", "-1"],
        ["--rate-limit-per-minute", "many"],
        ["--delete-policy", "none"],
    ],
)
def test_invalid_options_are_refused_before_any_call(argv: list[str]) -> None:
    """argparse refuses them (exit 2) before the API is called."""
    with pytest.raises(SystemExit) as caught:
        given(*argv)
    assert caught.value.code == 2


def test_none_parses_to_the_clear_marker() -> None:
    """`none`, in any case, is the clear marker rather than a value to parse."""
    assert given("--rate-limit-per-minute", "none")["rate_limit_per_minute"] is CLEARED


@pytest.mark.parametrize(
    ("tenant", "path"),
    [(None, "/dead-letters"), ("acme", "/tenants/acme/dead-letters"), ("a/b c", "/tenants/a%2Fb%20c/dead-letters")],
)
def test_dead_letters_of_a_tenant_are_under_it(tenant: str | None, path: str) -> None:
    """`--tenant` selects the realm's own route (its name as one path segment); without it, the global one."""
    assert _dead_letters(tenant) == path


def test_a_named_downstream_has_its_own_routes() -> None:
    """`--downstream NAME` selects /tenants/{realm}/downstreams/{name}; `default` is the realm's own route."""
    assert _dead_letters("acme", "crm") == "/tenants/acme/downstreams/crm/dead-letters"
    assert _dead_letters("acme", "default") == "/tenants/acme/dead-letters"


def test_oauth2_options_build_the_auth_body_and_a_rotation_keeps_them() -> None:
    """--auth oauth2 with its fields sends `auth` with the secret from the environment; a later rotation
    with only a new secret keeps the current token URL and client id."""
    argv = ("--base-url", "https://kc/scim/v2", "--auth", "oauth2", "--token-url", "https://kc/token")
    args = _parser().parse_args(["tenants", "enable", "acme", *argv, "--client-id", "svc", "--preset", "keycloak"])
    fields = ("auth", "token_url", "client_id", "scope", "audience", "username", "base_url", "preset", "user_lookup")
    body = enable_body(None, {k: getattr(args, k) for k in fields}, "s3cret")
    assert body == {
        "base_url": "https://kc/scim/v2",
        "preset": "keycloak",
        "auth": {
            "type": "oauth2_client_credentials",
            "token_url": "https://kc/token",
            "client_id": "svc",
            "client_secret": "s3cret",
        },
    }
    current = {
        **CURRENT,
        "preset": "keycloak",
        "auth": {"type": "oauth2_client_credentials", "endpoint": "https://kc/token", "client_id": "svc"},
    }
    rotated = enable_body(current, given(), "s3cret-2")
    assert rotated["auth"] == {
        "type": "oauth2_client_credentials",
        "token_url": "https://kc/token",
        "client_id": "svc",
        "client_secret": "s3cret-2",
    }
    assert rotated["preset"] == "keycloak" and "token" not in rotated


def test_capability_overrides_are_passed_as_json_and_a_rotation_keeps_them() -> None:
    """`--capabilities '{"patch": false}'` sends that object; a later rotation repeats the current one."""
    args = _parser().parse_args(["tenants", "enable", "acme", "--capabilities", '{"patch": false}'])
    body = enable_body(CURRENT, {"capabilities": args.capabilities}, NEW_TOKEN)
    assert body["capabilities"] == {"patch": False}
    kept = enable_body({**CURRENT, "capabilities": {"patch": False}}, {}, NEW_TOKEN)
    assert kept["capabilities"] == {"patch": False}


@pytest.mark.parametrize("text", ["patch=false", "[1]"])
def test_capabilities_that_are_not_a_json_object_are_refused(text: str) -> None:
    """Anything but a JSON object is a usage error before any call."""
    with pytest.raises(SystemExit):
        _parser().parse_args(["tenants", "enable", "acme", "--capabilities", text])
