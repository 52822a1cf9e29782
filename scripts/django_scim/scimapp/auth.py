"""The SCIM client's bearer token: a request that carries it is made as the SCIM client, any other is
anonymous (django-scim2's own check then answers 401)."""

import hmac
import os
from collections.abc import Callable

from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse


class ScimClient(AnonymousUser):
    """Authenticated, and nothing more: django-scim2 asks only `is_authenticated`."""

    @property
    def is_authenticated(self) -> bool:  # type: ignore[override]
        return True


class BearerTokenMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.expected = f"Bearer {os.environ['DJANGO_SCIM_TOKEN']}".encode()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get("Authorization", "").encode()
        request.user = ScimClient() if hmac.compare_digest(given, self.expected) else AnonymousUser()
        return self.get_response(request)
