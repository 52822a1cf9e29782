"""The only package that speaks HTTP to SCIM downstreams."""
