"""Shared building blocks of the KAITO API models: the base model, object metadata and
the ``metav1.Condition`` shape.

Every model speaks camelCase on the wire (``alias_generator=to_camel``) and snake_case in
Python (``populate_by_name``), rejects unknown fields (``extra="forbid"``) and takes the
description of each field from its attribute docstring, which also lands in the CRD.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "ApiInfo",
    "Condition",
    "KubeModel",
    "KubeObject",
    "ObjectMeta",
    "OwnerReference",
    "PrinterColumn",
    "ScaleSubresource",
]


class KubeModel(BaseModel):
    """Base of every KAITO API model: camelCase aliases, strict about unknown fields."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )


@dataclass(frozen=True)
class PrinterColumn:
    """An ``additionalPrinterColumns`` entry of a CRD (what ``kubectl get`` shows)."""

    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class ScaleSubresource:
    """The CRD ``scale`` subresource: where ``kubectl scale``, an HPA or KEDA read and write."""

    spec_replicas_path: str = ".spec.replicas"
    status_replicas_path: str = ".status.replicas"
    label_selector_path: str | None = ".status.selector"


@dataclass(frozen=True)
class ApiInfo:
    """Everything about a kind that is not a field: group, version, names, CRD extras."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...] = ()
    scope: Literal["Namespaced", "Cluster"] = "Namespaced"
    categories: tuple[str, ...] = ()
    printer_columns: tuple[PrinterColumn, ...] = ()
    status_subresource: bool = True
    scale_subresource: ScaleSubresource | None = None
    older_versions: tuple[str, ...] = ()
    """Versions served beside ``version`` (the storage version). With the same schema
    the API server converts by rewriting ``apiVersion`` alone (``conversion: None``);
    a version with its own model in ``KINDS`` gets the operator's conversion webhook."""
    older_versions_warning: str | None = None
    """Marks the older versions deprecated: the API server sends this warning with every
    request made in them (``kubectl`` prints it)."""

    @property
    def api_version(self) -> str:
        """``group/version`` of the storage version, as in a manifest's ``apiVersion``."""
        return f"{self.group}/{self.version}"

    @property
    def api_versions(self) -> tuple[str, ...]:
        """Every served ``group/version``, the older ones first, the storage version last."""
        return tuple(f"{self.group}/{v}" for v in (*self.older_versions, self.version))

    @property
    def crd_name(self) -> str:
        """The CustomResourceDefinition's name, ``<plural>.<group>``."""
        return f"{self.plural}.{self.group}"


class OwnerReference(KubeModel):
    """A reference to the object that owns this one (garbage collection)."""

    api_version: str
    """API version of the owner."""
    kind: str
    """Kind of the owner."""
    name: str
    """Name of the owner."""
    uid: str
    """UID of the owner."""
    controller: bool | None = None
    """True when the owner is the managing controller."""
    block_owner_deletion: bool | None = None
    """True when the owner cannot be deleted before this object is."""


class ObjectMeta(KubeModel):
    """Standard Kubernetes object metadata.

    Unlike the KAITO specs, metadata tolerates keys this model does not name (for
    example ``managedFields`` or ``selfLink``), since real API objects carry them; such
    keys are kept and written back unchanged.
    """

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    """Object name, unique within the namespace."""
    generate_name: str | None = None
    """Prefix the API server uses to generate a name when ``name`` is empty."""
    namespace: str | None = None
    """Namespace of the object."""
    labels: dict[str, str] | None = None
    """Labels used to select and organise objects."""
    annotations: dict[str, str] | None = None
    """Non-identifying metadata; KAITO reads behaviour switches from here."""
    uid: str | None = None
    """Unique id set by the API server."""
    resource_version: str | None = None
    """Opaque version set by the API server (optimistic concurrency)."""
    generation: int | None = None
    """Sequence number of the desired state, bumped by the API server on spec change."""
    creation_timestamp: datetime | None = None
    """When the object was created (set by the API server)."""
    deletion_timestamp: datetime | None = None
    """When deletion was requested (set by the API server)."""
    deletion_grace_period_seconds: int | None = None
    """Seconds allowed for graceful termination once deletion is requested."""
    finalizers: list[str] | None = None
    """Finalizers that must be removed before the object is deleted."""
    owner_references: list[OwnerReference] | None = None
    """Objects this one depends on."""


class Condition(KubeModel):
    """One observation of an object's state, shaped like ``metav1.Condition``."""

    type: str
    """Condition type in CamelCase (for example ``InferenceReady``)."""
    status: Literal["True", "False", "Unknown"]
    """Status of the condition: True, False or Unknown."""
    reason: str
    """Machine-readable CamelCase reason for the last transition."""
    message: str = ""
    """Human-readable details of the last transition."""
    last_transition_time: datetime
    """When the condition last changed status."""
    observed_generation: int | None = None
    """The ``metadata.generation`` the condition was computed from."""


class KubeObject(KubeModel):
    """Base of a top-level kind: ``apiVersion``, ``kind``, ``metadata`` and manifest I/O.

    Subclasses set :attr:`api_info` and narrow ``api_version`` and ``kind`` to literals.
    """

    api_info: ClassVar[ApiInfo]

    api_version: str
    """Versioned schema of this object (``group/version``)."""
    kind: str
    """Kind of this object."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""

    def to_manifest(self) -> dict[str, Any]:
        """The object as a Kubernetes manifest: camelCase keys, unset (None) fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> Self:
        """Parse a manifest dict; raises :class:`pydantic.ValidationError` on bad input."""
        return cls.model_validate(manifest)
