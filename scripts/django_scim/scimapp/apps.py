from django.apps import AppConfig


class ScimAppConfig(AppConfig):
    name = "scimapp"
