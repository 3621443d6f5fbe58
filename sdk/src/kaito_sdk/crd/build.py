"""Build the ``apiextensions.k8s.io/v1`` CustomResourceDefinition of a KAITO kind."""

from __future__ import annotations

import copy
from typing import Any

from kaito_sdk.api import KINDS, ApiInfo, KubeObject, PrinterColumn
from kaito_sdk.crd.schema import structural_schema

__all__ = ["CONVERSION_PATH", "CONVERSION_SERVICE", "build_crd"]

#: Path of the operator's conversion endpoint (the webhook server's ``/convert``).
CONVERSION_PATH = "/convert"
#: The webhook Service of the kaito-ragengine chart installed with its defaults (release
#: ``kaito-ragengine`` in namespace ``kaito-ragengine``). helm cannot template ``crds/``:
#: the operator patches the service reference and the caBundle at startup.
CONVERSION_SERVICE = {
    "namespace": "kaito-ragengine",
    "name": "kaito-ragengine-webhook",
    "path": CONVERSION_PATH,
    "port": 9443,
}

_ROOT_FIELDS = {
    "apiVersion": {
        "type": "string",
        "description": "Versioned schema of this object (group/version).",
    },
    "kind": {"type": "string", "description": "Kind of this object."},
    "metadata": {"type": "object"},
}


def build_crd(model: type[KubeObject]) -> dict[str, Any]:
    """The CustomResourceDefinition for ``model``: its structural schema, names, status
    and scale subresources and printer columns, all taken from the model and its
    ``api_info``.

    The older versions are served beside the model's ``version`` (the storage version),
    each with the schema of its model in :data:`~kaito_sdk.api.KINDS`. Where every
    version has the same schema, ``conversion: None`` (the API server only rewrites
    ``apiVersion``) is all the conversion needed; otherwise the operator's conversion
    webhook (:data:`CONVERSION_SERVICE`) converts.
    """
    info = model.api_info
    schemas = {
        name: _object_schema(KINDS.get((f"{info.group}/{name}", info.kind), model))
        for name in (*info.older_versions, info.version)
    }
    names: dict[str, Any] = {
        "kind": info.kind,
        "listKind": f"{info.kind}List",
        "plural": info.plural,
        "singular": info.singular,
    }
    if info.short_names:
        names["shortNames"] = list(info.short_names)
    if info.categories:
        names["categories"] = list(info.categories)
    versions = [
        _version(info, name, schema, storage=name == info.version)
        for name, schema in schemas.items()
    ]
    spec: dict[str, Any] = {
        "group": info.group,
        "names": names,
        "scope": info.scope,
        "versions": versions,
    }
    if len({repr(schema) for schema in schemas.values()}) > 1:
        spec["conversion"] = {
            "strategy": "Webhook",
            "webhook": {
                "conversionReviewVersions": ["v1"],
                "clientConfig": {"service": dict(CONVERSION_SERVICE)},
            },
        }
    elif info.older_versions:
        spec["conversion"] = {"strategy": "None"}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": info.crd_name},
        "spec": spec,
    }


def _object_schema(model: type[KubeObject]) -> dict[str, Any]:
    """The structural schema of one version's model, with the root fields every object has."""
    schema = structural_schema(model)
    properties = schema["properties"]
    for name, root_schema in _ROOT_FIELDS.items():
        properties[name] = dict(root_schema)
    schema["required"] = [
        name for name in schema.get("required", []) if name not in ("apiVersion", "kind")
    ]
    if not schema["required"]:
        del schema["required"]
    return schema


def _version(info: ApiInfo, name: str, schema: dict[str, Any], *, storage: bool) -> dict[str, Any]:
    version: dict[str, Any] = {"name": name, "served": True, "storage": storage}
    if not storage and info.older_versions_warning:
        version["deprecated"] = True
        version["deprecationWarning"] = info.older_versions_warning
    if info.printer_columns:
        version["additionalPrinterColumns"] = [
            _printer_column(column) for column in info.printer_columns
        ]
    version["schema"] = {"openAPIV3Schema": copy.deepcopy(schema)}
    subresources: dict[str, Any] = {}
    if info.status_subresource:
        subresources["status"] = {}
    if info.scale_subresource is not None:
        scale = info.scale_subresource
        subresources["scale"] = {
            "specReplicasPath": scale.spec_replicas_path,
            "statusReplicasPath": scale.status_replicas_path,
        }
        if scale.label_selector_path:
            subresources["scale"]["labelSelectorPath"] = scale.label_selector_path
    if subresources:
        version["subresources"] = subresources
    return version


def _printer_column(column: PrinterColumn) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": column.name, "type": column.type, "jsonPath": column.json_path}
    if column.description:
        entry["description"] = column.description
    if column.priority:
        entry["priority"] = column.priority
    return entry
