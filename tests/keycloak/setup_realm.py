"""Re-exports devkit.keycloak, where the Keycloak set-up the tests share with the benches lives."""

from devkit.keycloak import (
    TEST_LISTENER,
    KafkaListener,
    MasterAdmin,
    ServiceAccount,
    keycloak_settings,
    realm_with_listener,
)

__all__ = [
    "TEST_LISTENER",
    "KafkaListener",
    "MasterAdmin",
    "ServiceAccount",
    "keycloak_settings",
    "realm_with_listener",
]
