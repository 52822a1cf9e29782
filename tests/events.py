"""Re-exports devkit.events, where the plugin-format event builders the tests share with the demo live."""

from devkit.events import admin_event, create_user, delete_user, now_ms, update_user, user_event

__all__ = ["admin_event", "create_user", "delete_user", "now_ms", "update_user", "user_event"]
