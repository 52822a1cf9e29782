"""Re-exports the devkit helpers the tests use (real broker, real scim2-server, the service, its API)."""

from devkit.kafka import (
    KAFKA_SCRIPT,
    Publisher,
    SecuredListener,
    create_source_topics,
    grant,
    start_broker,
    start_secured_broker,
    stop_broker,
)
from devkit.local import ROOT, free_port, wait_until
from devkit.scim import ScimServer, by_external_id, downstream_users, start_scim_server
from devkit.service import ADMIN_TOKEN, Api, kill_all, make_settings, running_service, settings_env, spawn_service

__all__ = [
    "ADMIN_TOKEN",
    "KAFKA_SCRIPT",
    "ROOT",
    "Api",
    "Publisher",
    "ScimServer",
    "SecuredListener",
    "by_external_id",
    "create_source_topics",
    "downstream_users",
    "free_port",
    "grant",
    "kill_all",
    "make_settings",
    "running_service",
    "settings_env",
    "spawn_service",
    "start_broker",
    "start_scim_server",
    "start_secured_broker",
    "stop_broker",
    "wait_until",
]
