"""Check a whole (multi-document) manifest file the way ``kubectl apply -f`` sees it.

KAITO's examples put a ConfigMap, Secret, PersistentVolumeClaim or Deployment next to
the Workspace. Those other kinds are passed over with a note, not refused; a ConfigMap
that a Workspace of the same file names in ``inference.config`` or ``tuning.config`` is
checked against the inference or tuning config schema. KAITO kinds this project does
not serve yet (``MultiRoleInference``...) are errors that say so and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kaito_sdk.api import ManifestError, Workspace, parse_manifest
from kaito_sdk.api.manifests import kaito_kind_problem
from kaito_sdk.inference_config import CONFIG_KEY, InferenceConfigError, parse_inference_config
from kaito_sdk.presets import UnknownPresetError, resolve_preset
from kaito_sdk.tuning_config import CONFIG_FILE_NAME, TuningConfigError, parse_training_config
from kaito_sdk.validation.errors import FieldError, FieldWarning

__all__ = [
    "DocumentReport",
    "check_documents",
    "inference_config_problems",
    "is_kaito_api_version",
    "tuning_config_problems",
]

KAITO_GROUP = "kaito.sh"


@dataclass
class DocumentReport:
    """What checking one document of a file found."""

    number: int
    """1-based position of the document in the file."""
    kind: str
    """The document's kind (``?`` when it has none)."""
    name: str
    """``metadata.name`` (``(no name)`` when it has none)."""
    errors: list[FieldError] = field(default_factory=list)
    """Rules it breaks; any error fails the file."""
    warnings: list[FieldWarning] = field(default_factory=list)
    """Things that will not do what the user may expect (the file still passes)."""
    notes: list[str] = field(default_factory=list)
    """Information: a kind passed over, a ConfigMap checked for a Workspace."""


def is_kaito_api_version(api_version: object) -> bool:
    """Whether ``api_version`` is in KAITO's API group (``kaito.sh/<version>``)."""
    return isinstance(api_version, str) and api_version.split("/", 1)[0] == KAITO_GROUP


def inference_config_problems(ws: Workspace, text: str) -> list[str]:
    """Why ``text`` is not a valid ``inference_config.yaml`` for ``ws`` (empty when it is)."""
    try:
        config = parse_inference_config(text)
    except InferenceConfigError as exc:
        return [f"{key}: {message}" for key, message in exc.errors]
    limit = None
    if ws.inference is not None and ws.inference.preset is not None:
        try:
            limit = resolve_preset(ws.inference.preset.name).context_length
        except UnknownPresetError:
            limit = None
    max_len = config.max_model_len()
    if limit is not None and max_len is not None and max_len > limit:
        return [f"vllm.max-model-len {max_len} exceeds the model's context of {limit} tokens"]
    return []


def tuning_config_problems(ws: Workspace, text: str) -> list[str]:
    """Why ``text`` is not a valid ``training_config.yaml`` for ``ws``'s tuning method."""
    method = (ws.tuning.method or "").lower() if ws.tuning is not None else ""
    try:
        parse_training_config(text, method=method or None)
    except TuningConfigError as exc:
        return [str(exc)]
    return []


def _describe(document: dict[str, Any]) -> tuple[str, str]:
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return str(document.get("kind") or "?"), str(name or "(no name)")


def _namespace(document: dict[str, Any] | Workspace) -> str:
    if isinstance(document, Workspace):
        return document.metadata.namespace or "default"
    metadata = document.get("metadata")
    namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
    return str(namespace or "default")


def check_documents(documents: Sequence[object]) -> list[DocumentReport]:
    """One report per document of a file (in order), with cross-document ConfigMap checks.

    ``documents`` are the parsed YAML documents, empty ones already left out.
    """
    # Imported here: the package's __init__ imports the rules this module builds on.
    from kaito_sdk.validation import check_manifest  # noqa: PLC0415

    reports: list[DocumentReport] = []
    config_maps: dict[tuple[str, str], tuple[DocumentReport, dict[str, Any]]] = {}
    workspaces: list[tuple[DocumentReport, Workspace]] = []
    for number, document in enumerate(documents, start=1):
        if not isinstance(document, dict):
            report = DocumentReport(number, "?", "(no name)")
            message = f"a manifest must be a mapping, not {type(document).__name__}"
            report.errors.append(FieldError("(root)", message))
            reports.append(report)
            continue
        report = DocumentReport(number, *_describe(document))
        reports.append(report)
        api_version = document.get("apiVersion")
        if not api_version or not document.get("kind"):
            message = "apiVersion and kind are required to tell which kind this is"
            report.errors.append(FieldError("kind", message))
            continue
        if not is_kaito_api_version(api_version):
            report.notes.append(
                f"{api_version} {report.kind} is not a KAITO kind: passed over "
                "(kubectl applies it as it is)"
            )
            if api_version == "v1" and report.kind == "ConfigMap":
                config_maps[(_namespace(document), report.name)] = (report, document)
            continue
        problem = kaito_kind_problem(str(api_version), report.kind)
        if problem is not None:
            report.errors.append(FieldError("kind", problem))
            continue
        result = check_manifest(document)
        report.errors += result.errors
        report.warnings += result.warnings
        if not result.errors:
            try:
                obj = parse_manifest(document)
            except (ManifestError, ValueError):
                continue
            if isinstance(obj, Workspace):
                workspaces.append((report, obj))
    for report, ws in workspaces:
        _check_config_references(report, ws, config_maps)
    return reports


def _check_config_references(
    report: DocumentReport,
    ws: Workspace,
    config_maps: dict[tuple[str, str], tuple[DocumentReport, dict[str, Any]]],
) -> None:
    """Check the ConfigMaps of the file that ``ws`` names, against the right schema."""
    references = []
    if ws.inference is not None and ws.inference.config:
        references.append(("inference.config", ws.inference.config, CONFIG_KEY))
    if ws.tuning is not None and ws.tuning.config:
        references.append(("tuning.config", ws.tuning.config, CONFIG_FILE_NAME))
    for path, name, key in references:
        found = config_maps.get((_namespace(ws), name))
        if found is None:
            report.notes.append(
                f"{path}: ConfigMap {name!r} is not in this file; admission checks it "
                "in the cluster"
            )
            continue
        map_report, config_map = found
        map_report.notes.append(f"checked as the {path} of Workspace {ws.metadata.name}")
        text = (config_map.get("data") or {}).get(key)
        if text is None:
            map_report.errors.append(
                FieldError("data", f"has no key {key!r} (the {path} of {ws.metadata.name})")
            )
            continue
        check = inference_config_problems if path == "inference.config" else tuning_config_problems
        for problem in check(ws, str(text)):
            map_report.errors.append(FieldError(f"data[{key}]", problem))
