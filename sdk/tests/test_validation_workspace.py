"""Every Workspace admission rule, each with failing and passing cases.

A case is a patch on a valid base manifest (``None`` removes a key), then either no
error at all (``path`` is None) or an error at ``path`` whose message contains ``fragment``.
"""

from __future__ import annotations

from typing import Any

import pytest

from kaito_sdk.api import Workspace
from kaito_sdk.validation import FieldError, validate, validate_manifest

INF = "inference_workspace"
TUN = "tuning_workspace"
A100 = "Standard_NC24ads_A100_v4"


def _adapter(name: str, **source: Any) -> dict[str, Any]:
    return {"source": {"name": name, **(source or {"image": f"ghcr.io/example/{name}:1"})}}


def case(
    base: str, change: dict[str, Any], path: str | None, fragment: str = "", *, id: str
) -> Any:
    """One rule check: ``path`` None means the patched manifest must be valid."""
    return pytest.param(base, change, path, fragment, id=id)


TRANSFORMERS = {"metadata": {"annotations": {"kaito.sh/runtime": "transformers"}}}
PVC = {"persistentVolumeClaim": {"claimName": "data"}}

CASES = [
    # metadata.name is a DNS-1123 label
    case(INF, {"metadata": {"name": "Bad_Name"}}, "metadata.name", "DNS-1123 label", id="name-bad"),
    case(INF, {"metadata": {"name": "a" * 64}}, "metadata.name", "at most 63", id="name-long"),
    case(INF, {"metadata": {"name": None}}, "metadata.name", "is required", id="name-missing"),
    case(INF, {"metadata": {"name": "ws-1"}}, None, id="name-ok"),
    case(INF, {"metadata": {"name": None, "generateName": "ws-"}}, None, id="generate-name-ok"),
    case(INF, {"metadata": {"namespace": "Prod"}}, "metadata.namespace", "DNS-1123", id="ns-bad"),
    # exactly one of inference and tuning
    case(INF, {"inference": None}, "inference", "neither is set", id="neither-inference-tuning"),
    case(
        INF,
        {"tuning": {"preset": {"name": "phi-4"}, "method": "lora"}},
        "inference",
        "both are set",
        id="both-inference-tuning",
    ),
    # preset XOR template
    case(
        INF,
        {"inference": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}},
        "inference",
        "mutually exclusive",
        id="preset-and-template",
    ),
    case(INF, {"inference": {"preset": None}}, "inference", "one of preset or template", id="none"),
    case(
        INF,
        {"inference": {"preset": None, "template": {"spec": {"containers": [{"name": "c"}]}}}},
        None,
        id="template-ok",
    ),
    case(
        INF,
        {"inference": {"preset": None, "template": {"spec": {"containers": []}}}},
        "inference.template.spec.containers",
        "at least one container",
        id="template-no-containers",
    ),
    # the preset must resolve; a deprecated preset or a gated model without a token Secret
    # is admitted, as KAITO does, with a warning (test_validation_warnings.py)
    case(
        INF,
        {"inference": {"preset": {"name": "gpt-17"}}},
        "inference.preset.name",
        "unknown preset",
        id="preset-unknown",
    ),
    case(INF, {"inference": {"preset": {"name": "Qwen/Qwen2-0.5B"}}}, None, id="preset-hf-id"),
    case(INF, {"inference": {"preset": {"name": "Phi-4-Mini-Instruct"}}}, None, id="preset-case"),
    case(INF, {"inference": {"preset": {"name": "falcon-7b"}}}, None, id="preset-deprecated"),
    case(
        INF,
        {"inference": {"preset": {"name": "llama-3.1-8b-instruct"}}},
        None,
        id="gated-without-secret",
    ),
    case(
        INF,
        {
            "inference": {
                "preset": {
                    "name": "mistral-7b-instruct",
                    "presetOptions": {"modelAccessSecret": "hf-token"},
                }
            }
        },
        None,
        id="gated-alias-with-secret",
    ),
    case(
        INF,
        {"inference": {"preset": {"accessMode": "secret"}}},
        "inference.preset.accessMode",
        "public, private",
        id="access-mode-bad",
    ),
    case(INF, {"inference": {"preset": {"accessMode": "public"}}}, None, id="access-mode-ok"),
    case(
        INF,
        {"inference": {"config": "My_Config"}},
        "inference.config",
        "DNS-1123 subdomain",
        id="config-bad",
    ),
    case(INF, {"inference": {"config": "my-inference-params"}}, None, id="config-ok"),
    # adapters: at most 10, unique DNS-1123 names, image or volume, no urls
    case(
        INF,
        {"inference": {"adapters": [_adapter(f"a{i}") for i in range(11)]}},
        "inference.adapters",
        "at most 10",
        id="adapters-11",
    ),
    case(
        INF,
        {"inference": {"adapters": [_adapter(f"a{i}") for i in range(10)]}},
        None,
        id="adapters-10",
    ),
    case(
        INF,
        {"inference": {"adapters": [_adapter("a"), _adapter("b"), _adapter("a")]}},
        "inference.adapters[2].source.name",
        "duplicate adapter name 'a'",
        id="adapter-duplicate",
    ),
    case(
        INF,
        {"inference": {"adapters": [_adapter("Bad.Name")]}},
        "inference.adapters[0].source.name",
        "DNS-1123 label",
        id="adapter-name-bad",
    ),
    case(
        INF,
        {"inference": {"adapters": [{"source": {"image": "r/a:1"}}]}},
        "inference.adapters[0].source.name",
        "is required",
        id="adapter-name-missing",
    ),
    case(
        INF,
        {"inference": {"adapters": [{"strength": "0.5"}]}},
        "inference.adapters[0].source",
        "is required",
        id="adapter-no-source",
    ),
    case(
        INF,
        {"inference": {"adapters": [{"source": {"name": "a"}}]}},
        "inference.adapters[0].source",
        "exactly one of image or volumeSource",
        id="adapter-no-location",
    ),
    case(
        INF,
        {"inference": {"adapters": [_adapter("a", image="r/a:1", volumeSource=PVC)]}},
        "inference.adapters[0].source",
        "exactly one of image or volumeSource",
        id="adapter-both-locations",
    ),
    case(
        INF,
        {"inference": {"adapters": [_adapter("a", image="r/a:1", urls=["https://example.com/a"])]}},
        "inference.adapters[0].source.urls",
        "not supported for adapters",
        id="adapter-urls",
    ),
    case(
        INF,
        {"inference": {"adapters": [_adapter("a", volumeSource=PVC)]}},
        None,
        id="adapter-volume-ok",
    ),
    # strength: a number in [0, 1]; under vLLM it is admitted with a warning
    *[
        case(
            INF,
            {**TRANSFORMERS, "inference": {"adapters": [{**_adapter("a"), "strength": value}]}},
            "inference.adapters[0].strength",
            fragment,
            id=f"strength-{value}",
        )
        for value, fragment in (
            ("abc", "not a number"),
            ("1.5", "between 0 and 1"),
            ("-0.1", "between 0 and 1"),
            ("nan", "between 0 and 1"),
        )
    ],
    *[
        case(
            INF,
            {**TRANSFORMERS, "inference": {"adapters": [{**_adapter("a"), "strength": value}]}},
            None,
            id=f"strength-{value}-ok",
        )
        for value in ("0", "0.5", "1.0")
    ],
    case(
        INF,
        {"inference": {"adapters": [{**_adapter("a"), "strength": "0.5"}]}},
        None,
        id="strength-on-vllm",
    ),
    # tuning: preset (tunable), method lora|qlora, input, output
    case(TUN, {"tuning": {"preset": None}}, "tuning.preset", "is required", id="tuning-no-preset"),
    case(
        TUN,
        {"tuning": {"preset": {"name": "qwen2.5-72b-instruct"}}},
        "tuning.preset.name",
        "does not support tuning",
        id="tuning-untunable",
    ),
    case(
        TUN,
        {"tuning": {"preset": {"name": "nope-model"}}},
        "tuning.preset.name",
        "unknown preset",
        id="tuning-unknown",
    ),
    case(
        TUN,
        {"tuning": {"method": "adam"}},
        "tuning.method",
        "not one of lora, qlora",
        id="method-bad",
    ),
    case(TUN, {"tuning": {"method": None}}, "tuning.method", "is required", id="method-missing"),
    case(TUN, {"tuning": {"method": "QLoRA"}}, None, id="method-case-insensitive"),
    case(
        TUN,
        {"tuning": {"config": "Bad_Params"}},
        "tuning.config",
        "DNS-1123",
        id="tuning-config-bad",
    ),
    case(TUN, {"tuning": {"input": None}}, "tuning.input", "is required", id="input-missing"),
    case(TUN, {"tuning": {"input": {"urls": None}}}, "tuning.input", "got none", id="input-empty"),
    case(
        TUN,
        {"tuning": {"input": {"image": "r/d:1"}}},
        "tuning.input",
        "got urls, image",
        id="input-two",
    ),
    case(TUN, {"tuning": {"input": {"urls": None, "image": "r/d:1"}}}, None, id="input-image-ok"),
    case(
        TUN, {"tuning": {"input": {"urls": None, "volumeSource": PVC}}}, None, id="input-volume-ok"
    ),
    *[
        case(
            TUN,
            {"tuning": {"input": {"urls": ["https://example.com/ok.jsonl", url]}}},
            "tuning.input.urls[1]",
            rule,
            id=f"input-url-{rule}",
        )
        for url, rule in (
            ("ftp://example.com/data.jsonl", "(scheme)"),
            ("http://localhost:8080/data.jsonl", "(localhost)"),
            ("http://10.0.0.5/data.jsonl", "(address)"),
            ("http://0x7f000001/data.jsonl", "(address)"),
            ("http://[::ffff:192.168.0.1]/d", "(address)"),
            ("http://169.254.169.254/latest/meta-data", "(metadata)"),
            ("http://metadata.google.internal/x", "(metadata)"),
        )
    ],
    case(TUN, {"tuning": {"output": None}}, "tuning.output", "is required", id="output-missing"),
    case(
        TUN,
        {"tuning": {"output": {"image": None}}},
        "tuning.output",
        "exactly one of image or volumeSource",
        id="output-none",
    ),
    case(
        TUN,
        {"tuning": {"output": {"volumeSource": PVC}}},
        "tuning.output",
        "exactly one",
        id="output-both",
    ),
    case(
        TUN,
        {"tuning": {"output": {"imagePushSecret": None}}},
        "tuning.output.imagePushSecret",
        "required when output.image is set",
        id="output-image-no-secret",
    ),
    case(
        TUN,
        {"tuning": {"output": {"image": None, "imagePushSecret": None, "volumeSource": PVC}}},
        None,
        id="output-volume-ok",
    ),
    case(
        TUN,
        {"resource": {"count": 2}},
        "resource.count",
        "at most 1 for tuning",
        id="tuning-count-2",
    ),
    case(TUN, {"resource": {"count": 1}}, None, id="tuning-count-1"),
    # resource: SKU catalog, count, label selector
    case(
        INF,
        {"resource": {"instanceType": "m5.large"}},
        "resource.instanceType",
        "not in the GPU SKU catalog",
        id="sku-unknown",
    ),
    case(
        INF,
        {"resource": {"instanceType": "g5.12xlarg"}},
        "resource.instanceType",
        "did you mean g5.12xlarge",
        id="sku-typo",
    ),
    case(INF, {"resource": {"instanceType": "g5.12xlarge"}}, None, id="sku-aws-ok"),
    case(
        INF,
        {"resource": {"instanceType": "Standard_NC4as_T4_v3"}},
        None,
        id="sku-azure-n-series-ok",
    ),
    case(INF, {"resource": {"instanceType": None}}, None, id="sku-absent-ok"),
    case(INF, {"resource": {"count": 0}}, "resource.count", "at least 1", id="count-0"),
    case(INF, {"resource": {"count": 2}}, None, id="count-2-inference"),
    case(
        INF,
        {"resource": {"labelSelector": {"matchLabels": None}}},
        "resource.labelSelector",
        "at least one label",
        id="selector-empty",
    ),
    case(
        INF,
        {
            "resource": {
                "labelSelector": {
                    "matchExpressions": [{"key": "apps", "operator": "NotIn", "values": ["x"]}]
                }
            }
        },
        "resource.labelSelector.matchExpressions[0].operator",
        "only 'In'",
        id="selector-notin",
    ),
    case(
        INF,
        {
            "resource": {
                "labelSelector": {"matchExpressions": [{"key": "apps", "operator": "Exists"}]}
            }
        },
        "resource.labelSelector.matchExpressions[0].operator",
        "only 'In'",
        id="selector-exists",
    ),
    case(
        INF,
        {"resource": {"labelSelector": {"matchExpressions": [{"key": "apps", "operator": "In"}]}}},
        "resource.labelSelector.matchExpressions[0].values",
        "at least one value",
        id="selector-in-no-values",
    ),
    case(
        INF,
        {
            "resource": {
                "labelSelector": {
                    "matchLabels": None,
                    "matchExpressions": [{"key": "apps", "operator": "In", "values": ["a", "b"]}],
                }
            }
        },
        None,
        id="selector-in-ok",
    ),
    case(
        INF,
        {
            "resource": {
                "labelSelector": {
                    "matchLabels": {
                        "apps": None,
                        "kaito.sh/workspace": "ws",
                        "karpenter.kaito.sh/workspace-name": "ws",
                    }
                }
            }
        },
        "resource.labelSelector",
        "reserves for itself",
        id="selector-only-reserved",
    ),
    case(
        INF,
        {
            "resource": {
                "labelSelector": {"matchLabels": {"kaito.sh/workspace": "ws", "team": "ml"}}
            }
        },
        None,
        id="selector-reserved-plus-own",
    ),
    case(
        INF,
        {"resource": {"labelSelector": {"matchLabels": {"bad key!": "x"}}}},
        "resource.labelSelector.matchLabels",
        "label key",
        id="selector-bad-key",
    ),
    case(
        INF,
        {"resource": {"labelSelector": {"matchLabels": {"apps": "-x-"}}}},
        "resource.labelSelector.matchLabels",
        "label value",
        id="selector-bad-value",
    ),
    # partition (bring-your-own nodes)
    case(
        TUN,
        {"resource": {"partition": {"mode": "accelerator", "count": 1}}},
        "resource.partition",
        "not supported for tuning",
        id="partition-tuning",
    ),
    case(
        INF,
        {"resource": {"partition": {"mode": "gpu"}}},
        "resource.partition.mode",
        "mig, accelerator",
        id="partition-mode",
    ),
    case(
        INF,
        {"resource": {"partition": {"mode": "mig"}}},
        "resource.partition.profile",
        "required for mode mig",
        id="mig-no-profile",
    ),
    case(
        INF,
        {"resource": {"partition": {"mode": "mig", "profile": "big"}}},
        "resource.partition.profile",
        "MIG profile",
        id="mig-bad-profile",
    ),
    case(
        INF,
        {"resource": {"partition": {"mode": "mig", "profile": "1g.10gb", "count": 2}}},
        "resource.partition.count",
        "not allowed",
        id="mig-count",
    ),
    case(
        INF, {"resource": {"partition": {"mode": "mig", "profile": "1g.10gb"}}}, None, id="mig-ok"
    ),
    case(
        INF,
        {"resource": {"partition": {"mode": "accelerator"}}},
        "resource.partition.count",
        "at least 1",
        id="accel-no-count",
    ),
    case(
        INF, {"resource": {"partition": {"mode": "accelerator", "count": 2}}}, None, id="accel-ok"
    ),
    # behaviour annotations
    case(
        INF,
        {"metadata": {"annotations": {"kaito.sh/runtime": "tgi"}}},
        "metadata.annotations[kaito.sh/runtime]",
        "vllm, transformers",
        id="runtime-annotation-bad",
    ),
    case(
        INF,
        {**TRANSFORMERS, "inference": {"preset": {"name": "qwen3-8b-awq"}}},
        "metadata.annotations[kaito.sh/runtime]",
        "runtime transformers cannot serve qwen3-8b-awq; it runs on vllm",
        id="runtime-unsupported-by-preset",
    ),
    case(
        INF, {**TRANSFORMERS, "inference": {"preset": {"name": "qwen3-8b"}}}, None, id="runtime-ok"
    ),
    case(
        INF,
        {"metadata": {"annotations": {"kaito.sh/performance-mode": "fast"}}},
        "metadata.annotations[kaito.sh/performance-mode]",
        "balanced",
        id="performance-mode-bad",
    ),
    case(
        INF,
        {"metadata": {"annotations": {"kaito.sh/performance-mode": "throughput"}}},
        None,
        id="performance-mode-ok",
    ),
    # the node image family, in any case, as KAITO normalises it
    *[
        case(
            INF,
            {"metadata": {"annotations": {"kaito.sh/node-image-family": family}}},
            None,
            id=f"image-family-{family}",
        )
        for family in ("ubuntu", "AzureLinux", "Ubuntu")
    ],
    case(
        INF,
        {"metadata": {"annotations": {"kaito.sh/node-image-family": "windows"}}},
        "metadata.annotations[kaito.sh/node-image-family]",
        "ubuntu, azurelinux",
        id="image-family-bad",
    ),
]


@pytest.mark.parametrize(("base", "change", "path", "fragment"), CASES)
def test_workspace_rule(
    request: pytest.FixtureRequest,
    patch: Any,
    base: str,
    change: dict[str, Any],
    path: str | None,
    fragment: str,
) -> None:
    manifest = patch(request.getfixturevalue(base), change)
    errors = validate_manifest(manifest)
    if path is None:
        assert errors == []
    else:
        assert any(e.path == path and fragment in e.message for e in errors), errors


def test_base_manifests_are_valid(inference_workspace: Any, tuning_workspace: Any) -> None:
    assert validate(Workspace.from_manifest(inference_workspace)) == []
    assert validate(Workspace.from_manifest(tuning_workspace)) == []


def test_all_errors_are_reported_at_once(inference_workspace: Any, patch: Any) -> None:
    manifest = patch(
        inference_workspace,
        {
            "metadata": {"name": "Bad"},
            "resource": {"instanceType": "m5.large"},
            "inference": {"preset": {"name": "nope"}},
        },
    )
    paths = [e.path for e in validate_manifest(manifest)]
    assert paths == ["metadata.name", "resource.instanceType", "inference.preset.name"]


def test_schema_errors_come_back_as_field_errors(inference_workspace: Any, patch: Any) -> None:
    manifest = patch(
        inference_workspace,
        {
            "resource": {"labelSelector": None, "instanceTyp": "x"},
            "inference": {"adapters": [{"strength": 0.5}]},
        },
    )
    errors = {str(e) for e in validate_manifest(manifest)}
    assert "resource.labelSelector: is required" in errors
    assert "resource.instanceTyp: unknown field (not part of the KAITO API)" in errors
    assert "inference.adapters[0].strength: Input should be a valid string" in errors


def test_unknown_kind_is_one_error() -> None:
    errors = validate_manifest({"apiVersion": "v1", "kind": "Pod"})
    assert len(errors) == 1
    assert errors[0].path == "kind"
    assert "unknown kind v1 Pod" in errors[0].message


def test_field_error_prints_path_and_message() -> None:
    error = FieldError("inference.adapters[1].strength", "must be between 0 and 1, got 2")
    assert str(error) == "inference.adapters[1].strength: must be between 0 and 1, got 2"
    with pytest.raises(AttributeError):
        error.path = "x"  # type: ignore[misc]  # the test assigns to a frozen field


def test_validate_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="Workspace, RAGEngine or InferenceSet"):
        validate("not an object")  # type: ignore[arg-type]  # wrong type on purpose
