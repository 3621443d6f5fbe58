"""Each chart's operator registers only its own controller (and RBAC grants only that)."""

from __future__ import annotations

import pytest

from kaito_operator import rbac
from kaito_operator.handlers import build_registry
from kaito_operator.settings import OperatorSettings


def watched(settings: OperatorSettings) -> set[str]:
    registry = build_registry(settings)
    selectors = set()
    for part in (registry._watching, registry._changing, registry._spawning):
        selectors |= part.get_all_selectors()
    return {str(selector.plural or selector.any_name) for selector in selectors}


def test_workspace_chart_watches_workspace_kinds_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_OPERATOR_CONTROLLERS", '["workspace"]')
    settings = OperatorSettings()
    assert settings.controllers == frozenset({"workspace"})
    assert watched(settings) == {"workspaces", "inferencesets", "statefulsets", "jobs", "pods"}


def test_ragengine_chart_watches_ragengine_kinds_only() -> None:
    settings = OperatorSettings(controllers=frozenset({"ragengine"}))
    assert watched(settings) == {"ragengines", "deployments", "pods"}


def test_gpu_provisioner_adds_the_nodeclaim_watch_and_grant() -> None:
    settings = OperatorSettings(
        controllers=frozenset({"workspace"}), node_provisioner="gpu-provisioner"
    )
    assert "nodeclaims" in watched(settings)
    granted = {
        r for rule in rbac.rules_for("workspace", "gpu-provisioner") for r in rule["resources"]
    }
    assert "nodeclaims" in granted
    assert "nodepools" not in granted


def test_webhook_handlers_only_when_enabled() -> None:
    off = build_registry(OperatorSettings(controllers=frozenset({"workspace"})))
    on = build_registry(
        OperatorSettings(controllers=frozenset({"workspace"}), webhook_enabled=True)
    )
    assert not list(off._webhooks.get_all_handlers())
    assert [h.id for h in on._webhooks.get_all_handlers()] == [
        "validate-workspace",
        "validate-inferenceset",
    ]
