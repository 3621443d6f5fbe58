"""Test support for the operator (not shipped): a Kubernetes API emulator on kmock and a
harness that runs the operator against it (needs the operator's ``test`` extra)."""

from kaito_operator_testing.emulator import KubernetesEmulator

__all__ = ["KubernetesEmulator"]
