"""The typed models: Python names, wire names, strictness and the documented shape."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

import kaito_sdk.api as api
from kaito_sdk.api import (
    AdapterSpec,
    Condition,
    ConditionStatus,
    DataSource,
    EmbeddingSpec,
    InferenceSpec,
    LabelSelector,
    LocalEmbeddingSpec,
    ObjectMeta,
    PresetSpec,
    RAGEngine,
    RAGEngineSpec,
    ResourceSpec,
    StorageSpec,
    VectorDBSpec,
    Workspace,
    WorkspaceConditionType,
    WorkspaceStatus,
)


def _workspace() -> Workspace:
    return Workspace(
        metadata=ObjectMeta(name="phi", namespace="default"),
        resource=ResourceSpec(
            instance_type="Standard_NC24ads_A100_v4",
            label_selector=LabelSelector(match_labels={"apps": "phi"}),
        ),
        inference=InferenceSpec(
            preset=PresetSpec(name="phi-4-mini-instruct"),
            adapters=[AdapterSpec(source=DataSource(name="a", image="r/a:1"), strength="0.5")],
        ),
    )


def test_workspace_manifest_is_camel_case_without_spec() -> None:
    manifest = _workspace().to_manifest()
    assert manifest == {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "phi", "namespace": "default"},
        "resource": {
            "instanceType": "Standard_NC24ads_A100_v4",
            "labelSelector": {"matchLabels": {"apps": "phi"}},
        },
        "inference": {
            "preset": {"name": "phi-4-mini-instruct"},
            "adapters": [{"source": {"name": "a", "image": "r/a:1"}, "strength": "0.5"}],
        },
    }
    assert list(manifest)[:3] == ["apiVersion", "kind", "metadata"]


def test_from_manifest_round_trips() -> None:
    workspace = _workspace()
    assert Workspace.from_manifest(workspace.to_manifest()) == workspace


def test_snake_case_and_camel_case_names_both_populate() -> None:
    by_alias = LabelSelector.model_validate({"matchLabels": {"a": "b"}})
    by_name = LabelSelector.model_validate({"match_labels": {"a": "b"}})
    assert by_alias == by_name
    assert by_alias.match_labels == {"a": "b"}


@pytest.mark.parametrize(
    ("manifest_patch", "location"),
    [
        ({"spec": {}}, "spec"),
        ({"resource": {"labelSelector": {}, "instanceTypo": "x"}}, "resource.instanceTypo"),
        (
            {"inference": {"preset": {"name": "phi-4", "presetOption": {}}}},
            "inference.preset.presetOption",
        ),
    ],
)
def test_unknown_fields_are_rejected_naming_the_field(
    manifest_patch: dict[str, Any], location: str
) -> None:
    manifest = {**_workspace().to_manifest(), **manifest_patch}
    with pytest.raises(ValidationError) as caught:
        Workspace.from_manifest(manifest)
    assert location in str(caught.value)
    assert "Extra inputs are not permitted" in str(caught.value)


def test_metadata_tolerates_and_keeps_server_fields() -> None:
    manifest = _workspace().to_manifest()
    manifest["metadata"] = {
        "name": "phi",
        "uid": "0b1d6c5e-1111-2222-3333-444455556666",
        "resourceVersion": "4242",
        "generation": 3,
        "creationTimestamp": "2026-01-02T03:04:05Z",
        "finalizers": ["workspace.finalizer.kaito.sh"],
        "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
        "selfLink": "/apis/kaito.sh/v1beta1/namespaces/default/workspaces/phi",
    }
    workspace = Workspace.from_manifest(manifest)
    assert workspace.metadata.generation == 3
    assert workspace.metadata.creation_timestamp == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert workspace.to_manifest()["metadata"] == manifest["metadata"]


def test_wrong_kind_or_api_version_is_rejected() -> None:
    manifest = _workspace().to_manifest()
    with pytest.raises(ValidationError, match="kind"):
        Workspace.from_manifest({**manifest, "kind": "RAGEngine"})
    with pytest.raises(ValidationError, match="apiVersion"):
        Workspace.from_manifest({**manifest, "apiVersion": "kaito.sh/v1"})


def test_status_uses_metav1_condition_shape() -> None:
    status = WorkspaceStatus(
        worker_nodes=["node-1"],
        state="Ready",
        target_node_count=1,
        conditions=[
            Condition(
                type=WorkspaceConditionType.INFERENCE_READY,
                status=ConditionStatus.TRUE,
                reason="InferenceReady",
                message="1/1 pods ready",
                last_transition_time=datetime(2026, 1, 1, tzinfo=UTC),
                observed_generation=2,
            )
        ],
        performance={"metrics": {"peakTokensPerMinute": {"value": 1200.5, "unit": "tokens/min"}}},
    )
    workspace = _workspace().model_copy(update={"status": status})
    dumped = workspace.to_manifest()["status"]
    assert dumped["workerNodes"] == ["node-1"]
    assert dumped["targetNodeCount"] == 1
    assert dumped["conditions"] == [
        {
            "type": "InferenceReady",
            "status": "True",
            "reason": "InferenceReady",
            "message": "1/1 pods ready",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 2,
        }
    ]
    assert dumped["performance"]["metrics"]["peakTokensPerMinute"]["value"] == 1200.5
    assert Workspace.from_manifest(workspace.to_manifest()) == workspace


def test_condition_status_is_restricted() -> None:
    with pytest.raises(ValidationError, match="status"):
        Condition.model_validate(
            {
                "type": "InferenceReady",
                "status": "Yes",
                "reason": "R",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        )


def test_ragengine_keeps_kaito_acronym_field_names() -> None:
    engine = RAGEngine(
        metadata=ObjectMeta(name="rag"),
        spec=RAGEngineSpec(
            embedding=EmbeddingSpec(local=LocalEmbeddingSpec(model_id="BAAI/bge-small-en-v1.5")),
            storage=StorageSpec(vector_db=VectorDBSpec(engine="qdrant", url="http://qdrant:6333")),
        ),
    )
    spec = engine.to_manifest()["spec"]
    assert spec["embedding"] == {"local": {"modelID": "BAAI/bge-small-en-v1.5"}}
    assert spec["storage"] == {"vectorDB": {"engine": "qdrant", "url": "http://qdrant:6333"}}
    assert RAGEngine.from_manifest(engine.to_manifest()) == engine


def test_schemaless_parts_keep_arbitrary_content() -> None:
    template = {"spec": {"containers": [{"name": "c", "image": "i", "env": [{"name": "A"}]}]}}
    volume = {"csi": {"driver": "blob.csi.azure.com", "volumeAttributes": {"x": "y"}}}
    workspace = _workspace().model_copy(
        update={
            "inference": InferenceSpec(
                template=template,
                adapters=[AdapterSpec(source=DataSource(name="a", volume_source=volume))],
            )
        }
    )
    inference = Workspace.from_manifest(workspace.to_manifest()).inference
    assert inference is not None
    assert inference.template == template
    assert inference.adapters is not None
    assert inference.adapters[0].source is not None
    assert inference.adapters[0].source.volume_source == volume


def _models() -> list[type[BaseModel]]:
    return [
        value
        for value in vars(api).values()
        if isinstance(value, type) and issubclass(value, BaseModel) and value.model_fields
    ]


@pytest.mark.parametrize("model", _models(), ids=lambda m: m.__name__)
def test_every_field_has_a_description(model: type[BaseModel]) -> None:
    missing = [name for name, field in model.model_fields.items() if not field.description]
    assert not missing, f"{model.__name__} fields without a docstring: {missing}"
    assert model.__doc__
