"""kopf handlers, registered into a registry per the configured controllers."""

from __future__ import annotations

import kopf

from kaito_operator.handlers import admission, lifecycle, owners
from kaito_operator.settings import OperatorSettings

__all__ = ["build_registry"]


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    """A registry holding the lifecycle handlers and the enabled controllers' handlers."""
    registry = kopf.OperatorRegistry()
    lifecycle.register(registry)
    for controller in sorted(settings.controllers):
        owners.register(registry, settings, controller)
    if "workspace" in settings.controllers:
        owners.register(registry, settings, "inferenceset")
    if settings.webhook_enabled:
        admission.register(registry, settings)
    return registry
