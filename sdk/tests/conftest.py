"""Shared fixtures for the SDK tests: valid base manifests and a deep-patch helper.

With pytest's importlib mode tests cannot import this module, so everything is a fixture;
test cases are written as patches (``None`` removes a key) applied to a base manifest.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest


def patched(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with ``patch`` merged in (dicts merge, other values replace,
    ``None`` removes the key)."""
    result = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = patched(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


Manifest = dict[str, Any]
Patcher = Callable[[Manifest, Manifest], Manifest]

INFERENCE_WORKSPACE: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "metadata": {"name": "ws", "namespace": "default"},
    "resource": {
        "instanceType": "Standard_NC24ads_A100_v4",
        "labelSelector": {"matchLabels": {"apps": "ws"}},
    },
    "inference": {"preset": {"name": "phi-4-mini-instruct"}},
}

TUNING_WORKSPACE: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "metadata": {"name": "tune", "namespace": "default"},
    "resource": {
        "instanceType": "Standard_NC24ads_A100_v4",
        "labelSelector": {"matchLabels": {"apps": "tune"}},
    },
    "tuning": {
        "preset": {"name": "phi-3-mini-4k-instruct"},
        "method": "lora",
        "input": {"urls": ["https://example.com/data/train.jsonl"]},
        "output": {"image": "ghcr.io/example/adapter:0.1", "imagePushSecret": "push-secret"},
    },
}

RAGENGINE: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "RAGEngine",
    "metadata": {"name": "rag", "namespace": "default"},
    "spec": {"embedding": {"local": {"modelID": "BAAI/bge-small-en-v1.5"}}},
}


@pytest.fixture
def inference_workspace() -> Manifest:
    """A valid inference Workspace manifest (a fresh copy)."""
    return copy.deepcopy(INFERENCE_WORKSPACE)


@pytest.fixture
def tuning_workspace() -> Manifest:
    """A valid tuning Workspace manifest (a fresh copy)."""
    return copy.deepcopy(TUNING_WORKSPACE)


@pytest.fixture
def ragengine() -> Manifest:
    """A valid RAGEngine manifest (a fresh copy)."""
    return copy.deepcopy(RAGENGINE)


@pytest.fixture
def patch() -> Patcher:
    """The deep-patch helper: ``patch(base, {"a": {"b": 1}, "c": None})``."""
    return patched
