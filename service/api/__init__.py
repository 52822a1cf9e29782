"""The HTTP API: health, readiness, metrics, and tenant management (thin handlers)."""
