"""Runs the django-scim2 test project (settings.py) in its own venv for the conformance tests.

Usage: python server.py PORT DATA_DIR. Migrates a fresh SQLite database in DATA_DIR, listens on
127.0.0.1:PORT with a threaded WSGI server, prints one JSON line with the SCIM base URL and the bearer
token, then serves until killed.
"""

import json
import os
import secrets
import sys
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No access log: the test output stays readable."""


def main() -> None:
    port, data = int(sys.argv[1]), Path(sys.argv[2])
    data.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    sys.path.insert(0, str(Path(__file__).parent))
    os.environ.update(
        DJANGO_SETTINGS_MODULE="settings",
        DJANGO_SCIM_DATA=str(data),
        DJANGO_SCIM_TOKEN=token,
        DJANGO_SCIM_NETLOC=f"127.0.0.1:{port}",
        DJANGO_SCIM_SECRET_KEY=secrets.token_hex(16),
    )
    import django
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    server = make_server("127.0.0.1", port, get_wsgi_application(), ThreadingServer, QuietHandler)
    print(json.dumps({"scim_url": f"http://127.0.0.1:{port}/scim/v2", "token": token}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
