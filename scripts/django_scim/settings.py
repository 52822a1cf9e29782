"""Django settings of the test project serving django-scim2 (scripts/django_scim/server.py sets the env).

SQLite in the directory the server is given (empty at every start), no sessions, no admin: the only
way in is the bearer token middleware (scimapp.auth), the SCIM API under /scim/v2/.
"""

import os

SECRET_KEY = os.environ.get("DJANGO_SCIM_SECRET_KEY", "test-only")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_scim", "scimapp"]
MIDDLEWARE = ["scimapp.auth.BearerTokenMiddleware"]
AUTH_USER_MODEL = "scimapp.User"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(os.environ.get("DJANGO_SCIM_DATA", "."), "db.sqlite3"),
        "OPTIONS": {"timeout": 20},  # the threaded server writes from several threads
    }
}

SCIM_SERVICE_PROVIDER = {
    "NETLOC": os.environ.get("DJANGO_SCIM_NETLOC", "127.0.0.1"),
    "SCHEME": "http",
    "GROUP_MODEL": "scimapp.models.Group",
    "AUTHENTICATION_SCHEMES": [
        {
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "A static bearer token (DJANGO_SCIM_TOKEN)",
            "primary": True,
        }
    ],
}

LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
