"""The only package that speaks HTTP to Keycloak: its Admin REST API, read as a service account."""

from service.keycloak_admin.client import GroupPage, KeycloakAdminClient, UserPage, error_for_status
from service.keycloak_admin.errors import (
    KeycloakError,
    KeycloakNotFound,
    KeycloakUnauthorized,
    KeycloakUnavailable,
)
from service.keycloak_admin.mapping import group_fields, user_attributes

__all__ = [
    "GroupPage",
    "KeycloakAdminClient",
    "KeycloakError",
    "KeycloakNotFound",
    "KeycloakUnauthorized",
    "KeycloakUnavailable",
    "UserPage",
    "error_for_status",
    "group_fields",
    "user_attributes",
]
