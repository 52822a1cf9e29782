"""Per-tenant downstream configuration, kept in a compacted Kafka topic (no extra database)."""
