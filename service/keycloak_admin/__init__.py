"""The only package that speaks HTTP to Keycloak: its Admin REST API, read as a service account."""

from service.keycloak_admin.client import KeycloakAdminClient, UserPage, error_for_status
from service.keycloak_admin.errors import (
    KeycloakError,
    KeycloakNotFound,
    KeycloakUnauthorized,
    KeycloakUnavailable,
)
from service.keycloak_admin.mapping import user_attributes

__all__ = [
    "KeycloakAdminClient",
    "KeycloakError",
    "KeycloakNotFound",
    "KeycloakUnauthorized",
    "KeycloakUnavailable",
    "UserPage",
    "error_for_status",
    "user_attributes",
]
