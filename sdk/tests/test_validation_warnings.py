"""Where we know better than KAITO we warn, not refuse: ``check`` returns the warnings."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kaito_sdk.api import Workspace
from kaito_sdk.validation import FieldWarning, Report, check, check_manifest, validate

BASE: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "metadata": {"name": "ws"},
    "resource": {
        "instanceType": "Standard_NC24ads_A100_v4",
        "labelSelector": {"matchLabels": {"apps": "ws"}},
    },
    "inference": {"preset": {"name": "phi-4-mini-instruct"}},
}
ADAPTER = {"source": {"name": "a", "image": "registry.example/adapter:1"}}
TRANSFORMERS = {"kaito.sh/runtime": "transformers"}


def manifest(inference: dict[str, Any], annotations: dict[str, str] | None = None) -> Any:
    result = copy.deepcopy(BASE)
    result["inference"] = inference
    if annotations:
        result["metadata"]["annotations"] = annotations
    return result


@pytest.mark.parametrize(
    ("inference", "annotations", "path", "fragments"),
    [
        pytest.param(
            {"preset": {"name": "llama-3.1-8b-instruct"}},
            None,
            "inference.preset.presetOptions.modelAccessSecret",
            ("gated", "HF_TOKEN", "401/403"),
            id="gated-without-secret",
        ),
        pytest.param(
            {"preset": {"name": "falcon-7b-instruct"}},
            None,
            "inference.preset.name",
            ("deprecated", "still served"),
            id="deprecated-preset",
        ),
        pytest.param(
            {"preset": {"name": "phi-2"}},
            None,
            "inference.preset.name",
            ("deprecated",),
            id="deprecated-phi-2",
        ),
        pytest.param(
            {
                "preset": {"name": "phi-4-mini-instruct"},
                "adapters": [{**ADAPTER, "strength": "0.4"}],
            },
            None,
            "inference.adapters[0].strength",
            ("ignored by the vLLM runtime", "full strength (1.0)", "kaito.sh/runtime"),
            id="strength-under-vllm",
        ),
    ],
)
def test_kaito_accepts_it_so_do_we_with_a_warning(
    inference: dict[str, Any], annotations: dict[str, str] | None, path: str, fragments: tuple[str]
) -> None:
    report = check_manifest(manifest(inference, annotations))
    assert report.errors == []
    [warning] = report.warnings
    assert isinstance(warning, FieldWarning)
    assert warning.path == path
    for fragment in fragments:
        assert fragment in warning.message
    assert str(warning).startswith(f"{path}: ")


@pytest.mark.parametrize(
    ("inference", "annotations"),
    [
        pytest.param(
            {
                "preset": {
                    "name": "llama-3.1-8b-instruct",
                    "presetOptions": {"modelAccessSecret": "hf-token"},
                }
            },
            None,
            id="gated-with-secret",
        ),
        pytest.param(
            {
                "preset": {"name": "phi-4-mini-instruct"},
                "adapters": [{**ADAPTER, "strength": "1.0"}],
            },
            None,
            id="full-strength-under-vllm",
        ),
        pytest.param(
            {
                "preset": {"name": "phi-4-mini-instruct"},
                "adapters": [{**ADAPTER, "strength": "0.4"}],
            },
            TRANSFORMERS,
            id="strength-under-transformers",
        ),
        pytest.param({"preset": {"name": "gpt-oss-120b"}}, None, id="current-preset"),
    ],
)
def test_nothing_to_warn_about(
    inference: dict[str, Any], annotations: dict[str, str] | None
) -> None:
    assert check_manifest(manifest(inference, annotations)) == Report([], [])


def test_errors_and_warnings_come_back_together() -> None:
    bad = manifest(
        {"preset": {"name": "falcon-7b"}, "adapters": [{**ADAPTER, "strength": "1.5"}]},
    )
    report = check_manifest(bad)
    assert [str(e) for e in report.errors] == [
        "inference.adapters[0].strength: must be between 0 and 1, got 1.5"
    ]
    assert [w.path for w in report.warnings] == ["inference.preset.name"]


def test_check_of_a_typed_object_matches_validate() -> None:
    ws = Workspace.from_manifest(manifest({"preset": {"name": "mistral-7b-instruct"}}))
    report = check(ws)
    assert report.errors == validate(ws) == []
    assert [w.path for w in report.warnings] == ["inference.preset.presetOptions.modelAccessSecret"]


def test_a_tuning_preset_is_warned_about_too() -> None:
    tuning = copy.deepcopy(BASE)
    del tuning["inference"]
    tuning["tuning"] = {
        "preset": {"name": "falcon-7b"},
        "method": "lora",
        "input": {"urls": ["https://example.com/data.parquet"]},
        "output": {"volumeSource": {"emptyDir": {}}},
    }
    report = check_manifest(tuning)
    assert report.errors == []
    assert [w.path for w in report.warnings] == ["tuning.preset.name"]


def test_multirole_inference_is_named_as_not_supported_yet() -> None:
    report = check_manifest(
        {"apiVersion": "kaito.sh/v1alpha1", "kind": "MultiRoleInference", "metadata": {"name": "x"}}
    )
    [error] = report.errors
    assert error.path == "kind"
    assert error.message.startswith("MultiRoleInference is not supported yet: prefill/decode")
    assert "unknown kind" not in error.message
    unknown = check_manifest({"apiVersion": "kaito.sh/v1beta1", "kind": "Nonesuch"})
    assert unknown.errors[0].message.startswith("unknown kind kaito.sh/v1beta1 Nonesuch")


def test_an_inferenceset_warns_about_its_member_workspaces() -> None:
    report = check_manifest(
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "InferenceSet",
            "metadata": {"name": "pool"},
            "spec": {
                "replicas": 2,
                "labelSelector": {"matchLabels": {"apps": "pool"}},
                "template": {
                    "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
                    "inference": {"preset": {"name": "llama-3.1-8b-instruct"}},
                },
            },
        }
    )
    assert report.errors == []
    assert [w.path for w in report.warnings] == [
        "spec.template.inference.preset.presetOptions.modelAccessSecret"
    ]
