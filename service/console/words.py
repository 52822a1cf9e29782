"""What the console says, in an operator's words, for each refusal and warning the tenant service gives.

The service's own detail (which request, what answered) is shown under it; these say what to do.
"""

from __future__ import annotations

__all__ = ["REFUSALS", "WARNINGS", "refusal", "warning"]

REFUSALS: dict[str, str] = {
    "not_found": "The downstream answered 404: the base URL is wrong. Check the host and the path prefix "
    "(e.g. /scim/v2) against the application's SCIM settings.",
    "unauthorized": "The downstream answered 401 or 403: it refused the token. Copy the token again from the "
    "application's SCIM settings (it may have expired or been regenerated).",
    "not_scim": "Something answered, but not as a SCIM API: the URL points at a web page or another API. "
    "Use the SCIM base URL, the one with /ServiceProviderConfig under it.",
    "unreachable": "The downstream could not be reached: no connection, a timeout, or a name that does not "
    "resolve. Check the host name, the port, and that this service may connect to it.",
    "redirect": "The downstream redirected the request: give the final SCIM base URL (often https:// instead "
    "of http://, or a trailing path).",
    "invalid_url": "The base URL is not an absolute http(s) URL without credentials, query or fragment.",
    "insecure_url": "Plain http is refused for this host: use https, or add the host to "
    "OUTBOUND_SCIM_ALLOW_HTTP_HOSTS if it is a trusted internal one.",
    "forbidden_address": "The host resolves to an address the egress policy refuses (private, link-local or "
    "cloud metadata). Private addresses need OUTBOUND_SCIM_ALLOW_PRIVATE_NETWORKS.",
    "downstream_error": "The downstream answered with an error: look at its logs for the request named below.",
    "invalid_mapping": "The attribute mapping names an attribute the downstream does not declare.",
    "invalid_request": "The form is not complete or not valid.",
    "keycloak_not_configured": "This needs Keycloak admin access (the OUTBOUND_SCIM_KEYCLOAK_* settings).",
    "not_enabled": "Outbound SCIM is not enabled for this downstream.",
    "tenant_unreadable": "This replica cannot read the downstream's stored record.",
    "no_backfill": "No backfill was started for this downstream.",
}

WARNINGS: dict[str, str] = {
    "listener_missing": "Keycloak does not send this realm's events to the service: add the event listener in "
    "Realm settings > Events > Event listeners.",
    "representation_off": "Admin events are saved without their representation: switch on "
    "'Include representation' in Realm settings > Events > Admin events settings.",
    "events_config_unreadable": "The realm's event settings could not be read: give the service's Keycloak "
    "client the view-events role, or check them by hand.",
    "groups_refused": "The downstream does not support PATCH: group sync stays off, users are provisioned.",
}


def refusal(code: str) -> str:
    return REFUSALS.get(code, "The request was refused.")


def warning(code: str) -> str:
    return WARNINGS.get(code, "Check the realm's event settings.")
