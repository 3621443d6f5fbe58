"""``kaito render FILE``: print the objects the operator would create, without a cluster.

Workspaces and RAGEngines in the file go through the same planning and builders as the
operator, after the admission rules (an object admission would refuse is an error; its
warnings go to stderr); ConfigMaps in the same file stand in for the cluster's, and other
kinds are passed over with a note on stderr. Every built-in object is checked with
kubernetes-validate (strict) before it is printed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, TypeGuard, get_args

import typer
import yaml

from kaito_operator.builders import inference as inference_builders
from kaito_operator.builders import inferenceset as inferenceset_builders
from kaito_operator.builders import nodes as node_builders
from kaito_operator.builders import ragengine as rag_builders
from kaito_operator.builders import services as service_builders
from kaito_operator.builders import tuning as tuning_builders
from kaito_operator.errors import InvalidSpecError
from kaito_operator.reconcilers import plan
from kaito_operator.settings import NodeProvisioner, OperatorSettings
from kaito_sdk.api import InferenceSet, RAGEngine, Workspace, parse_manifest
from kaito_sdk.api.inferenceset import member_workspace
from kaito_sdk.api.manifests import kaito_kind_problem
from kaito_sdk.images import image_for
from kaito_sdk.inference_config import CONFIG_KEY
from kaito_sdk.labels import ANNOTATION_NODE_IMAGE_FAMILY
from kaito_sdk.skus import find_sku
from kaito_sdk.tuning_config import CONFIG_FILE_NAME
from kaito_sdk.validation import check_manifest
from kaito_sdk.validation.documents import is_kaito_api_version

__all__ = ["RenderError", "register", "render_manifests", "validate_objects"]

#: The uid the API server will assign; rendered owner references carry this placeholder.
PLACEHOLDER_UID = "assigned-by-the-api-server"
_BUILT_IN = {"v1", "apps/v1", "batch/v1"}
_K8S_VERSION = "1.32"


class RenderError(ValueError):
    """A manifest that cannot be rendered (names the object and the field)."""


def _with_identity(manifest: dict[str, Any]) -> dict[str, Any]:
    meta = dict(manifest.get("metadata") or {})
    meta.setdefault("namespace", "default")
    meta.setdefault("uid", PLACEHOLDER_UID)
    return {**manifest, "metadata": meta}


def _config_text(
    config_maps: dict[tuple[str, str], dict[str, Any]], namespace: str, name: str, key: str
) -> str | None:
    config_map = config_maps.get((namespace, name))
    if config_map is None:
        return None
    text = (config_map.get("data") or {}).get(key)
    return None if text is None else str(text)


def _render_workspace(
    ws: Workspace, settings: OperatorSettings, config_maps: dict[tuple[str, str], dict[str, Any]]
) -> list[dict[str, Any]]:
    def image(service: str) -> str:
        return image_for(service, registry=settings.image_registry, tag=settings.image_tag)

    namespace = str(ws.metadata.namespace)
    preset = plan.preset_of(ws)
    gpu = plan.needs_gpu(ws, preset)
    sku = find_sku(ws.resource.instance_type) if ws.resource.instance_type else None
    config_text = None
    if ws.inference is not None and ws.inference.config:
        config_text = _config_text(config_maps, namespace, ws.inference.config, CONFIG_KEY)
        if config_text is None:
            print(f"note: ConfigMap {ws.inference.config!r} is not in the file", file=sys.stderr)
    target = plan.node_count(ws, preset, sku=sku, config_text=config_text)
    objects: list[dict[str, Any]] = []
    if gpu and ws.resource.instance_type and settings.node_provisioner != "byo":
        node_class = node_builders.NodeClassRef(
            settings.karpenter_node_class_group,
            settings.karpenter_node_class_kind,
            settings.karpenter_node_class_name,
        )
        if settings.node_provisioner == "karpenter":
            objects.append(
                node_builders.nodepool(
                    ws, instance_type=ws.resource.instance_type, nodes=target, node_class=node_class
                )
            )
        else:
            storage = preset.disk_storage_requirement if preset is not None else "100Gi"
            annotations = ws.metadata.annotations or {}
            family = annotations.get(ANNOTATION_NODE_IMAGE_FAMILY, "ubuntu").lower()
            objects += [
                node_builders.nodeclaim(
                    ws,
                    name,
                    instance_type=ws.resource.instance_type,
                    storage=storage,
                    node_class=node_class,
                    image_family=family,
                )
                for name in node_builders.nodeclaim_names(ws, target)
            ]
    if ws.tuning is not None:
        assert preset is not None
        config_name = ws.tuning.config or tuning_builders.tuning_config_name(ws)
        text = _config_text(config_maps, namespace, config_name, CONFIG_FILE_NAME)
        if text is None:
            source = ws.tuning.config or f"{(ws.tuning.method or '').lower()}-params-template"
            print(f"note: ConfigMap {source!r} is not in the file: not checked", file=sys.stderr)
        job_plan = plan.tuning_plan(
            ws, preset, image=image("tuning"), config_map=config_name, config_text=text, sku=sku
        )
        return [*objects, tuning_builders.tuning_job(ws, job_plan)]
    inference = plan.inference_plan(
        ws, preset, image=image("inference"), target=target, sku=sku, config_text=config_text
    )
    multi_node = inference.nodes > 1
    return [
        *objects,
        service_builders.headless_service(ws, ray=multi_node),
        service_builders.service(
            ws, leader_only=multi_node, load_balancer=service_builders.wants_load_balancer(ws)
        ),
        inference_builders.inference_statefulset(ws, inference),
    ]


def _render_inferenceset(
    inference_set: InferenceSet,
    settings: OperatorSettings,
    config_maps: dict[tuple[str, str], dict[str, Any]],
) -> list[dict[str, Any]]:
    """The set's Service and ScaledObject, then each member Workspace and its children."""
    template = member_workspace(inference_set, 0)
    runtime = plan.runtime_of(template, plan.preset_of(template))
    scaler = inferenceset_builders.scaled_object(inference_set, runtime=runtime)
    objects = [inferenceset_builders.members_service(inference_set), *([scaler] if scaler else [])]
    revision = inferenceset_builders.template_hash(inference_set)
    for index in range(inference_set.desired_replicas):
        member = inferenceset_builders.member_manifest(inference_set, index, revision)
        objects.append(member)
        objects += _render_workspace(
            Workspace.from_manifest(_with_identity(member)), settings, config_maps
        )
    return objects


def render_manifests(
    documents: list[dict[str, Any]], settings: OperatorSettings
) -> list[dict[str, Any]]:
    """The children of every Workspace, InferenceSet and RAGEngine among ``documents``."""
    config_maps = {
        (str((d.get("metadata") or {}).get("namespace", "default")), str(d["metadata"]["name"])): d
        for d in documents
        if d.get("kind") == "ConfigMap" and d.get("apiVersion") == "v1"
    }
    rendered: list[dict[str, Any]] = []
    for document in documents:
        label = f"{document.get('kind')} {(document.get('metadata') or {}).get('name', '?')}"
        api_version = str(document.get("apiVersion") or "")
        if not is_kaito_api_version(api_version):
            print(f"note: {api_version} {label}: not a KAITO kind, passed over", file=sys.stderr)
            continue
        problem = kaito_kind_problem(api_version, str(document.get("kind") or ""))
        if problem is not None:
            raise RenderError(f"{label}: {problem}")
        if document.get("kind") not in {"Workspace", "RAGEngine", "InferenceSet"}:
            print(f"note: {label}: the operator renders no children for it", file=sys.stderr)
            continue
        report = check_manifest(_with_identity(document))
        if report.errors:  # admission would refuse it: the operator never builds it
            raise RenderError(f"{label}: " + "; ".join(str(error) for error in report.errors))
        for warning in report.warnings:
            print(f"warning: {label}: {warning}", file=sys.stderr)
        try:
            obj = parse_manifest(_with_identity(document))
            if isinstance(obj, Workspace):
                rendered += _render_workspace(obj, settings, config_maps)
            elif isinstance(obj, InferenceSet):
                rendered += _render_inferenceset(obj, settings, config_maps)
            elif isinstance(obj, RAGEngine):
                image = image_for(
                    "ragengine", registry=settings.image_registry, tag=settings.image_tag
                )
                rendered += [
                    service_builders.service(obj),
                    rag_builders.ragengine_deployment(obj, image=image),
                ]
        except (InvalidSpecError, rag_builders.UnsupportedSpecError, ValueError) as exc:
            raise RenderError(f"{label}: {exc}") from None
    return rendered


def validate_objects(objects: list[dict[str, Any]]) -> list[str]:
    """kubernetes-validate (strict) problems of the built-in objects."""
    import kubernetes_validate  # noqa: PLC0415 (large schema package, only for this command)

    problems = []
    for obj in objects:
        if obj["apiVersion"] not in _BUILT_IN:
            continue
        try:
            kubernetes_validate.validate(obj, _K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{obj['kind']} {obj['metadata']['name']}: {exc.message}")
    return problems


def _is_provisioner(value: str) -> TypeGuard[NodeProvisioner]:
    """Whether ``value`` names a node provisioner the operator knows."""
    return value in get_args(NodeProvisioner)


def _render_command(
    file: Annotated[
        Path,
        typer.Argument(
            help="Workspace/RAGEngine manifests (ConfigMaps they use may be in the file too)."
        ),
    ],
    node_provisioner: Annotated[
        str, typer.Option(help="karpenter, gpu-provisioner or byo")
    ] = "byo",
) -> None:
    """Print the objects the operator would create for the manifests (no cluster needed)."""
    try:
        documents = [
            d for d in yaml.safe_load_all(file.read_text(encoding="utf-8")) if isinstance(d, dict)
        ]
    except (OSError, yaml.YAMLError) as exc:
        print(f"{file}: {exc}", file=sys.stderr)
        raise typer.Exit(code=1) from None
    if not _is_provisioner(node_provisioner):
        print(
            f"--node-provisioner: must be karpenter, gpu-provisioner or byo, "
            f"got {node_provisioner!r}",
            file=sys.stderr,
        )
        raise typer.Exit(code=2)
    settings = OperatorSettings(node_provisioner=node_provisioner)
    try:
        objects = render_manifests(documents, settings)
    except RenderError as exc:
        print(f"{file}: {exc}", file=sys.stderr)
        raise typer.Exit(code=1) from None
    problems = validate_objects(objects)
    for problem in problems:
        print(f"invalid: {problem}", file=sys.stderr)
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    if problems:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """``kaito.cli`` entry point: add ``kaito render``."""
    app.command("render")(_render_command)
