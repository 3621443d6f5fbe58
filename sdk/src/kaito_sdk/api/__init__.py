"""Typed models of KAITO's API (``kaito.sh/v1beta1``): ``Workspace`` and ``RAGEngine``.

Python names are snake_case, manifests camelCase::

    ws = Workspace(
        metadata=ObjectMeta(name="phi-4"),
        resource=ResourceSpec(
            instance_type="Standard_NC24ads_A100_v4",
            label_selector=LabelSelector(match_labels={"apps": "phi-4"}),
        ),
        inference=InferenceSpec(preset=PresetSpec(name="phi-4-mini-instruct")),
    )
    manifest = ws.to_manifest()
    assert Workspace.from_manifest(manifest) == ws
"""

from kaito_sdk.api.base import (
    ApiInfo,
    Condition,
    KubeModel,
    KubeObject,
    ObjectMeta,
    OwnerReference,
    PrinterColumn,
)
from kaito_sdk.api.conditions import (
    ConditionReason,
    ConditionStatus,
    RAGEngineConditionType,
    WorkspaceConditionType,
    WorkspaceState,
)
from kaito_sdk.api.manifests import (
    KINDS,
    KaitoObject,
    ManifestError,
    dump_yaml,
    load_yaml,
    parse_manifest,
)
from kaito_sdk.api.ragengine import (
    ConfigMapReference,
    EmbeddingSpec,
    GuardrailsSpec,
    InferenceServiceSpec,
    LocalEmbeddingSpec,
    PersistentVolumeSpec,
    RAGEngine,
    RAGEngineSpec,
    RAGEngineStatus,
    RemoteEmbeddingSpec,
    StorageSpec,
    VectorDBSpec,
)
from kaito_sdk.api.workspace import (
    AdapterSpec,
    DataDestination,
    DataSource,
    InferenceSpec,
    LabelSelector,
    LabelSelectorRequirement,
    PartitionSpec,
    PerformanceMetric,
    PerformanceStatus,
    PresetOptions,
    PresetSpec,
    ResourceSpec,
    TuningSpec,
    Workspace,
    WorkspaceStatus,
)

__all__ = [
    "KINDS",
    "AdapterSpec",
    "ApiInfo",
    "Condition",
    "ConditionReason",
    "ConditionStatus",
    "ConfigMapReference",
    "DataDestination",
    "DataSource",
    "EmbeddingSpec",
    "GuardrailsSpec",
    "InferenceServiceSpec",
    "InferenceSpec",
    "KaitoObject",
    "KubeModel",
    "KubeObject",
    "LabelSelector",
    "LabelSelectorRequirement",
    "LocalEmbeddingSpec",
    "ManifestError",
    "ObjectMeta",
    "OwnerReference",
    "PartitionSpec",
    "PerformanceMetric",
    "PerformanceStatus",
    "PersistentVolumeSpec",
    "PresetOptions",
    "PresetSpec",
    "PrinterColumn",
    "RAGEngine",
    "RAGEngineConditionType",
    "RAGEngineSpec",
    "RAGEngineStatus",
    "RemoteEmbeddingSpec",
    "ResourceSpec",
    "StorageSpec",
    "TuningSpec",
    "VectorDBSpec",
    "Workspace",
    "WorkspaceConditionType",
    "WorkspaceState",
    "WorkspaceStatus",
    "dump_yaml",
    "load_yaml",
    "parse_manifest",
]
