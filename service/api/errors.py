"""What the API's service objects raise instead of answering; the HTTP layer maps each to a status in one
place (service.api.app.problem).

ApiError (code: the `error` of the answer)
├── InvalidRequest         the body or a parameter does not validate            -> 400 invalid_request
├── NotEnabled             the realm has no tenant                              -> 404 not_enabled
├── NoBackfill             no backfill was started for the realm on this replica -> 404 no_backfill
├── KeycloakNotConfigured  the operation needs OUTBOUND_SCIM_KEYCLOAK_*         -> 409 keycloak_not_configured
└── ActivityOff            the activity log is off (OUTBOUND_SCIM_ACTIVITY_ENABLED) -> 409 activity_off
From service.errors, raised through the service objects as they are:
  EnableRefused            the downstream failed validation: 400 for a URL the egress policy refuses
                           (invalid_url, insecure_url, forbidden_address), 422 otherwise, `error` = its reason
  TenantUnreadable         the realm's record cannot be read here               -> 409 tenant_unreadable
"""

from __future__ import annotations

from typing import ClassVar

from service.errors import ServiceError


class ApiError(ServiceError):
    code: ClassVar[str]

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidRequest(ApiError):
    code = "invalid_request"


class NotEnabled(ApiError):
    code = "not_enabled"

    def __init__(self, realm: str) -> None:
        super().__init__("outbound SCIM is not enabled for this realm")
        self.realm = realm


class NoBackfill(ApiError):
    code = "no_backfill"

    def __init__(self, realm: str) -> None:
        super().__init__("no backfill was started for this realm on this replica")
        self.realm = realm


class KeycloakNotConfigured(ApiError):
    code = "keycloak_not_configured"

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} needs the OUTBOUND_SCIM_KEYCLOAK_* settings")


class ActivityOff(ApiError):
    code = "activity_off"

    def __init__(self) -> None:
        super().__init__("the activity log is off: set OUTBOUND_SCIM_ACTIVITY_ENABLED=true")
