"""Test support: a Kubernetes API emulator on kmock (needs the ``test`` extra)."""

from kaito_operator.testing.emulator import KubernetesEmulator, resource_key

__all__ = ["KubernetesEmulator", "resource_key"]
