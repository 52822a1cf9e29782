"""Runs canaille (through pytest-iam's Server) in its own venv for the integration tests.

Usage: python server.py PORT. Creates one OAuth2 client allowed the client_credentials grant (its
tokens may use the SCIM API: canaille skips permission checks for tokens without a subject), prints one
JSON line with the URLs and the client's credentials, then serves until killed. Memory backend: every
start is empty.
"""

import datetime
import json
import os
import secrets
import sys
import uuid

from canaille import create_app
from canaille.backends import Backend
from joserfc.jwk import JWKRegistry
from pytest_iam import Server


def config(port: int) -> dict[str, object]:
    jwk = JWKRegistry.generate_key("RSA", 2048)
    jwk.ensure_kid()
    return {
        "TESTING": True,
        "ENV_FILE": None,
        "SECRET_KEY": secrets.token_hex(16),
        "WTF_CSRF_ENABLED": False,
        "PREFERRED_URL_SCHEME": "http",
        "SERVER_NAME": f"127.0.0.1:{port}",
        "CANAILLE": {"DATABASE": "memory", "JAVASCRIPT": False},
        "CANAILLE_OIDC": {"ACTIVE_JWKS": [jwk.as_dict(private=True)]},
        "CANAILLE_SCIM": {"ENABLE_SERVER": True},  # without the section the blueprint is not registered
    }


def main() -> None:
    port = int(sys.argv[1])
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"  # plain http on the loopback
    app = create_app(config=config(port), env_file=None, env_prefix="CANAILLE_TEST_")
    server = Server(app, port, Backend.instance)
    server.httpd.server_close()  # pytest-iam binds "localhost"; the service may reach 127.0.0.1 only
    from wsgiref.simple_server import make_server

    server.httpd = make_server("127.0.0.1", port, app, handler_class=server._make_request_handler())
    secret = secrets.token_urlsafe(24)
    with app.app_context():
        client = server.models.Client(
            client_id="outbound-scim",
            client_secret=secret,
            client_name="outbound-scim",
            client_id_issued_at=datetime.datetime.now(datetime.UTC),
            grant_types=["client_credentials"],
            response_types=["token"],
            scope=["openid"],
            redirect_uris=[f"http://127.0.0.1:{port}/unused"],
            token_endpoint_auth_method="client_secret_basic",  # noqa: S106 (a method name, not a secret)
        )
        Backend.instance.save(client)
    base = f"http://127.0.0.1:{port}"
    line = {
        "url": base,
        "scim_url": f"{base}/scim/v2",
        "token_url": f"{base}/oauth/token",
        "client_id": "outbound-scim",
        "client_secret": secret,
        "run": str(uuid.uuid4()),
    }
    print(json.dumps(line), flush=True)
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()
