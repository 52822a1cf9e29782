"""The operator console: server-rendered pages under /ui/ over the tenant service and the activity log."""
