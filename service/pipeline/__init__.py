"""The Kafka side: stage 1 re-keys plugin records by user, stage 2 applies them per user in order."""
