"""Re-exports devkit.events, where the plugin-format event builders the tests share with the demo live."""

from devkit.events import (
    admin_event,
    create_group,
    create_user,
    delete_group,
    delete_user,
    group_event,
    join_group,
    move_group,
    now_ms,
    rename_group,
    update_user,
    user_event,
)

__all__ = [
    "admin_event",
    "create_group",
    "create_user",
    "delete_group",
    "delete_user",
    "group_event",
    "join_group",
    "move_group",
    "now_ms",
    "rename_group",
    "update_user",
    "user_event",
]
