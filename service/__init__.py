"""outbound-scim: Keycloak user events from Kafka to per-tenant SCIM 2.0 downstreams."""

__version__ = "0.1.0"
