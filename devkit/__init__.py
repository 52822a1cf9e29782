"""Development kit: what the tests, `make demo`, `make run` and the benches share.

- `devkit.local`: the repository root, free ports, readiness polling;
- `devkit.kafka`: the local broker (scripts/kafka/kafka.sh), topics, a plugin-like publisher;
- `devkit.scim`: a real scim2-server downstream and reading its users;
- `devkit.service`: settings for a local run, the service in-process or as its own process, the admin API;
- `devkit.events`: plugin-format Keycloak events;
- `devkit.keycloak`: just enough of Keycloak's Admin API to set up realms and service accounts.

It is not part of the shipped package: the wheel (and so the image) holds `service` only. It is
imported from the repository root, like `tests` and `scripts`, and needs the test extras.
"""
