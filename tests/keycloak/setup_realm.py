"""Re-exports devkit.keycloak, where the Keycloak set-up the tests share with the benches lives."""

from devkit.keycloak import TEST_LISTENER, MasterAdmin, ServiceAccount, keycloak_settings

__all__ = ["TEST_LISTENER", "MasterAdmin", "ServiceAccount", "keycloak_settings"]
