"""Update rules: the fields that may not change after creation, each with a failing and
a passing case."""

from __future__ import annotations

from typing import Any

import pytest

from kaito_sdk.api import RAGEngine, Workspace, parse_manifest
from kaito_sdk.validation import validate_update

INF = "inference_workspace"
TUN = "tuning_workspace"
RAG = "ragengine"
TEMPLATE = {"spec": {"containers": [{"name": "c", "image": "ghcr.io/example/c:1"}]}}
COMPUTE = {"instanceType": "Standard_NV36ads_A10_v5", "labelSelector": {"matchLabels": {"a": "b"}}}


def case(
    base: str,
    before: dict[str, Any],
    after: dict[str, Any],
    path: str | None,
    fragment: str = "",
    *,
    id: str,
) -> Any:
    """``base`` patched with ``before`` is updated to ``base`` patched with ``after``."""
    return pytest.param(base, before, after, path, fragment, id=id)


CASES = [
    case(INF, {}, {"metadata": {"labels": {"team": "ml"}}}, None, id="metadata-change-ok"),
    case(
        INF,
        {},
        {"resource": {"instanceType": "Standard_NC48ads_A100_v4"}},
        "resource.instanceType",
        "is immutable",
        id="instance-type",
    ),
    case(INF, {"resource": {"instanceType": None}}, {}, None, id="instance-type-set-once-ok"),
    case(
        INF,
        {},
        {"resource": {"labelSelector": {"matchLabels": {"apps": "other"}}}},
        "resource.labelSelector",
        "is immutable",
        id="label-selector",
    ),
    case(INF, {}, {"resource": {"count": 2}}, "resource.count", "is immutable", id="count"),
    case(INF, {"resource": {"count": 1}}, {"resource": {"count": 1}}, None, id="count-same-ok"),
    case(
        INF,
        {"resource": {"partition": {"mode": "accelerator", "count": 1}}},
        {"resource": {"partition": {"mode": "accelerator", "count": 2}}},
        "resource.partition",
        "is immutable",
        id="partition",
    ),
    case(
        INF,
        {},
        {"inference": {"preset": {"name": "qwen2.5-7b-instruct"}}},
        "inference.preset.name",
        "is immutable",
        id="preset-name",
    ),
    case(INF, {}, {"inference": {"config": "new-params"}}, None, id="inference-config-ok"),
    case(
        INF,
        {},
        {"inference": {"adapters": [{"source": {"name": "a", "image": "r/a:1"}}]}},
        None,
        id="adapters-change-ok",
    ),
    case(
        INF,
        {"inference": {"preset": None, "template": TEMPLATE}},
        {},
        "inference.template",
        "cannot be unset",
        id="template-unset",
    ),
    case(
        INF,
        {},
        {"inference": {"preset": None, "template": TEMPLATE}},
        "inference.template",
        "cannot be set",
        id="template-set",
    ),
    case(
        INF,
        {"inference": {"preset": None, "template": TEMPLATE}},
        {"inference": {"preset": None, "template": {"spec": {"containers": [{"name": "d"}]}}}},
        None,
        id="template-edit-ok",
    ),
    case(
        INF,
        {},
        {
            "inference": None,
            "tuning": {
                "preset": {"name": "phi-4-mini-instruct"},
                "method": "lora",
                "input": {"image": "r/d:1"},
                "output": {"image": "r/o:1", "imagePushSecret": "s"},
            },
        },
        "inference",
        "cannot be removed",
        id="inference-to-tuning",
    ),
    case(
        TUN,
        {},
        {"tuning": None, "inference": {"preset": {"name": "phi-4-mini-instruct"}}},
        "tuning",
        "cannot be removed",
        id="tuning-to-inference",
    ),
    case(
        TUN,
        {},
        {"tuning": {"preset": {"name": "phi-3.5-mini-instruct"}}},
        "tuning.preset",
        "is immutable",
        id="tuning-preset",
    ),
    case(TUN, {}, {"tuning": {"method": "qlora"}}, "tuning.method", "is immutable", id="method"),
    case(TUN, {}, {"tuning": {"method": "LORA"}}, None, id="method-case-ok"),
    case(
        TUN,
        {"tuning": {"input": {"name": "d1"}}},
        {"tuning": {"input": {"name": "d2"}}},
        "tuning.input.name",
        "is immutable",
        id="input-name",
    ),
    case(
        TUN,
        {"tuning": {"input": {"name": "d1"}}},
        {"tuning": {"input": {"name": "d1", "urls": ["https://example.com/v2.jsonl"]}}},
        None,
        id="input-urls-change-ok",
    ),
    case(
        RAG, {}, {"spec": {"compute": COMPUTE}}, "spec.compute", "cannot be added", id="compute-add"
    ),
    case(
        RAG,
        {"spec": {"compute": COMPUTE}},
        {},
        "spec.compute",
        "cannot be removed",
        id="compute-rm",
    ),
    case(
        RAG,
        {"spec": {"compute": COMPUTE}},
        {"spec": {"compute": {**COMPUTE, "instanceType": "Standard_NV72ads_A10_v5"}}},
        "spec.compute.instanceType",
        "is immutable",
        id="compute-instance-type",
    ),
    case(
        RAG,
        {"spec": {"compute": COMPUTE}},
        {
            "spec": {
                "compute": COMPUTE,
                "inferenceService": {"url": "http://l/v1", "contextWindowSize": 4096},
            }
        },
        None,
        id="compute-kept-ok",
    ),
]


@pytest.mark.parametrize(("base", "before", "after", "path", "fragment"), CASES)
def test_update_rule(
    request: pytest.FixtureRequest,
    patch: Any,
    base: str,
    before: dict[str, Any],
    after: dict[str, Any],
    path: str | None,
    fragment: str,
) -> None:
    manifest = request.getfixturevalue(base)
    old = parse_manifest(patch(manifest, before))
    new = parse_manifest(patch(manifest, after))
    errors = validate_update(old, new)
    if path is None:
        assert errors == []
    else:
        assert any(e.path == path and fragment in e.message for e in errors), errors


def test_update_also_applies_create_rules(inference_workspace: dict[str, Any], patch: Any) -> None:
    old = Workspace.from_manifest(inference_workspace)
    new = Workspace.from_manifest(patch(inference_workspace, {"inference": {"config": "Bad_CM"}}))
    assert [e.path for e in validate_update(old, new)] == ["inference.config"]


def test_immutable_message_shows_both_values(
    inference_workspace: dict[str, Any], patch: Any
) -> None:
    old = Workspace.from_manifest(inference_workspace)
    new = Workspace.from_manifest(patch(inference_workspace, {"resource": {"count": 3}}))
    assert [str(e) for e in validate_update(old, new)] == [
        "resource.count: is immutable: was None, now 3"
    ]


def test_kind_cannot_change(inference_workspace: dict[str, Any], ragengine: dict[str, Any]) -> None:
    errors = validate_update(
        Workspace.from_manifest(inference_workspace), RAGEngine.from_manifest(ragengine)
    )
    assert [str(e) for e in errors] == ["kind: cannot change from Workspace to RAGEngine"]
