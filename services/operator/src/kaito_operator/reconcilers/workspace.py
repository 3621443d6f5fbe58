"""Workspace reconcile: read what the plan needs, provision nodes, apply the workload.

Level-based and idempotent: every call server-side-applies the full desired state, so a
restarted operator converges without duplicates. The status is computed by the pure
:func:`~kaito_operator.reconcilers.observe.observe_workspace` from what really runs; this
class is the Workspace :class:`~kaito_operator.controller.Kind` of the generic controller.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping
from typing import Any, ClassVar

from kaito_operator.builders import inference as inference_builders
from kaito_operator.builders import services as service_builders
from kaito_operator.builders import tuning as tuning_builders
from kaito_operator.builders.common import NEWEST, KubeVersion
from kaito_operator.errors import InvalidSpecError, NotReadyError, refuse_invalid
from kaito_operator.kube import KubeApiError, KubeClient
from kaito_operator.reconcilers import plan
from kaito_operator.reconcilers.kind import Children, Reconciled
from kaito_operator.reconcilers.nodes import NodeProvisioner, gpu_sku_from_labels
from kaito_operator.reconcilers.observe import Outcome, WorkspaceChildren, observe_workspace
from kaito_operator.settings import OperatorSettings
from kaito_sdk import labels
from kaito_sdk.api import Workspace, WorkspaceStatus
from kaito_sdk.images import image_for
from kaito_sdk.inference_config import CONFIG_KEY
from kaito_sdk.presets import Preset
from kaito_sdk.skus import GpuSku, find_sku
from kaito_sdk.tuning_config import CONFIG_FILE_NAME
from kaito_sdk.validation import validate

__all__ = ["WorkspaceReconciler"]


class WorkspaceReconciler:
    """Drives Workspaces to their desired children and says what runs for them."""

    model: ClassVar[type[Workspace]] = Workspace
    summary: ClassVar[str] = "WorkspaceSucceeded"
    reconcile_on_child_change: ClassVar[bool] = False

    def __init__(self, kube: KubeClient, settings: OperatorSettings) -> None:
        self.kube = kube
        self.settings = settings
        self.nodes = NodeProvisioner(kube, settings)
        self._server: KubeVersion | None = None

    async def server(self) -> KubeVersion:
        """The API server's version, read once (at startup; unknown: :data:`NEWEST`): the
        builders set fields newer than the oldest supported Kubernetes only where it has them."""
        if self._server is None:
            try:
                info = await self.kube.server_version()
                self._server = KubeVersion.from_version_info(info) if info else NEWEST
            except (KubeApiError, ValueError):
                self._server = NEWEST
        return self._server

    def image(self, service: str) -> str:
        """The image of one of the project's services, from the configured registry and tag."""
        return image_for(
            service, registry=self.settings.image_registry, tag=self.settings.image_tag
        )

    async def reconcile(self, owner: Workspace) -> Reconciled:
        """Apply everything ``owner`` asks for; return the target node count (for the
        status) and the workload version written.

        The SDK's admission rules are checked here too: the webhook may be disabled, and
        names end up in paths and commands.
        """
        ws = owner
        refuse_invalid(validate(ws))
        preset = plan.preset_of(ws)
        gpu = plan.needs_gpu(ws, preset)
        config_text = await self._inference_config(ws)
        sku = await self._sku(ws) if gpu else None
        target = await self._target_nodes(ws, preset, sku=sku, config_text=config_text)
        if gpu:
            storage = preset.disk_storage_requirement if preset is not None else "100Gi"
            await self.nodes.provision(ws, nodes=target, storage=storage)
        if ws.tuning is not None:
            assert preset is not None
            job = await self._apply_tuning(ws, preset, sku)
            return Reconciled(target, ("Job", job) if job else None)
        inference = plan.inference_plan(
            ws,
            preset,
            image=self.image("inference"),
            target=target,
            sku=sku,
            config_text=config_text,
        )
        multi_node = inference.nodes > 1
        load_balancer = service_builders.wants_load_balancer(ws)
        children = (
            service_builders.headless_service(ws, ray=multi_node),
            service_builders.service(ws, leader_only=multi_node, load_balancer=load_balancer),
            inference_builders.inference_statefulset(ws, inference, server=await self.server()),
        )
        # Independent objects: applied concurrently (one round trip, not three).
        *_, statefulset = await asyncio.gather(*(self.kube.apply(child) for child in children))
        return Reconciled(target, ("StatefulSet", statefulset))

    async def cleanup(self, owner: Workspace) -> None:
        """Release what was provisioned outside the namespace (children go with the owner)."""
        await self.nodes.release(owner)

    async def observe(
        self, owner: Workspace, children: Children, outcome: Outcome, *, now: datetime.datetime
    ) -> WorkspaceStatus:
        """The status from the workload and pods (``children``) and the nodes read now."""
        name = owner.metadata.name
        workload_kind = "Job" if owner.tuning is not None else "StatefulSet"
        workload: Mapping[str, Any] | None = None
        pods = []
        for kind, obj in children:
            if kind == "Pod":
                pods.append(obj)
            elif kind == workload_kind and obj["metadata"]["name"] == name:
                workload = obj
        try:
            gpu = plan.needs_gpu(owner, plan.preset_of(owner))
        except InvalidSpecError:
            gpu = plan.needs_gpu(owner, None)
        inventory = await self.nodes.read(owner, gpu=gpu)
        return observe_workspace(
            owner,
            WorkspaceChildren(workload, pods, inventory),
            outcome,
            now=now,
            byo=self.settings.node_provisioner == "byo",
        )

    async def _sku(self, ws: Workspace) -> GpuSku | None:
        """The instance type's SKU, or one read from the GPU feature discovery labels."""
        if ws.resource.instance_type:
            return find_sku(ws.resource.instance_type)
        for node in await self.nodes.matching_nodes(ws.resource.label_selector):
            sku = gpu_sku_from_labels(node)
            if sku is not None:
                return sku
        return None

    async def _target_nodes(
        self, ws: Workspace, preset: Preset | None, *, sku: GpuSku | None, config_text: str | None
    ) -> int:
        """The node count: decided once, then kept in ``status.targetNodeCount``."""
        current = ws.status.target_node_count if ws.status is not None else None
        if current:
            return current
        return plan.node_count(ws, preset, sku=sku, config_text=config_text)

    async def _read_config_map(self, namespace: str | None, name: str, key: str) -> str:
        config_map = await self.kube.get("v1", "ConfigMap", name, namespace)
        if config_map is None:
            raise NotReadyError(f"ConfigMap {name!r} does not exist (yet)", delay=10)
        text = (config_map.get("data") or {}).get(key)
        if text is None:
            raise InvalidSpecError("config", f"ConfigMap {name!r} has no key {key!r}")
        return str(text)

    async def _inference_config(self, ws: Workspace) -> str | None:
        if ws.inference is None or not ws.inference.config:
            return None
        return await self._read_config_map(ws.metadata.namespace, ws.inference.config, CONFIG_KEY)

    async def _apply_tuning(
        self, ws: Workspace, preset: Preset, sku: GpuSku | None
    ) -> dict[str, Any] | None:
        """Apply the tuning Job; return it as written (None: it is up to date already)."""
        tuning = ws.tuning
        assert tuning is not None
        if tuning.config:
            config_name = tuning.config
            text = await self._read_config_map(ws.metadata.namespace, config_name, CONFIG_FILE_NAME)
        else:
            template = f"{(tuning.method or '').lower()}-params-template"
            release = self.settings.release_namespace
            text = await self._read_config_map(release, template, CONFIG_FILE_NAME)
            config_name = tuning_builders.tuning_config_name(ws)
            await self.kube.apply(tuning_builders.tuning_config_map(ws, text))
        job_plan = plan.tuning_plan(
            ws,
            preset,
            image=self.image("tuning"),
            config_map=config_name,
            config_text=text,
            sku=sku,
        )
        name, namespace = str(ws.metadata.name), ws.metadata.namespace
        existing = await self.kube.get("batch/v1", "Job", name, namespace)
        if existing is not None:
            annotations = existing["metadata"].get("annotations") or {}
            if annotations.get(labels.ANNOTATION_WORKSPACE_HASH) == job_plan.revision:
                return None
            # A Job's pod template is immutable: replace the Job.
            await self.kube.delete("batch/v1", "Job", name, namespace, propagation="Foreground")
            raise NotReadyError("the tuning spec changed: replacing the Job", delay=1)
        return await self.kube.apply(tuning_builders.tuning_job(ws, job_plan))
