"""Operator lifecycle: login, startup (settings, clients and controllers into ``memo``, the
controllers' resync loops started), cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import kopf

from kaito_operator.builders.common import NEWEST
from kaito_operator.controller import Controller
from kaito_operator.conversion import point_crd_at_webhook
from kaito_operator.handlers.admission import webhook_server
from kaito_operator.handlers.owners import children_index, owners_index
from kaito_operator.kube import KubeClient
from kaito_operator.memo import OperatorMemo
from kaito_operator.metrics import OperatorMetrics, serve_metrics
from kaito_operator.persistence import MemoryDiffBaseStorage
from kaito_operator.reconcilers.inferenceset import InferenceSetReconciler
from kaito_operator.reconcilers.ragengine import RAGEngineReconciler
from kaito_operator.reconcilers.workspace import WorkspaceReconciler
from kaito_operator.settings import OperatorSettings
from kaito_sdk import labels
from kaito_sdk.presets import list_presets, resolve_preset

#: The projected service-account token (rotated by the kubelet).
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105

__all__ = [
    "SERVICE_ACCOUNT_TOKEN",
    "cleanup",
    "connection_info",
    "login",
    "operator_client",
    "register",
    "startup",
]


def connection_info(
    settings: OperatorSettings, kopf_settings: kopf.OperatorSettings
) -> kopf.ConnectionInfo:
    """Where the API server is: the configured URL, else in-cluster, else kubeconfig."""
    if settings.api_server:
        return kopf.ConnectionInfo(server=settings.api_server, insecure=True)
    info = kopf.login_with_service_account(settings=kopf_settings) or kopf.login_with_kubeconfig(
        settings=kopf_settings
    )
    if info is None:
        raise kopf.PermanentError("no API server credentials: neither in-cluster nor a kubeconfig")
    return info


def operator_client(settings: OperatorSettings, kopf_settings: kopf.OperatorSettings) -> KubeClient:
    """The operator's own API client (in-cluster: with the rotating token file)."""
    in_cluster = settings.api_server is None and Path(SERVICE_ACCOUNT_TOKEN).exists()
    token_path = SERVICE_ACCOUNT_TOKEN if in_cluster else None
    return KubeClient.from_kopf(connection_info(settings, kopf_settings), token_path=token_path)


def login(*, memo: OperatorMemo, settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    """Authenticate kopf the same way the operator's own client does."""
    return connection_info(memo.settings, settings)


async def startup(
    *, memo: OperatorMemo, settings: kopf.OperatorSettings, logger: Any, **kwargs: Any
) -> None:
    """Tune kopf and put the client and the enabled controllers into ``memo``."""
    config: OperatorSettings = memo.settings
    settings.posting.enabled = config.post_events
    # Events that matter: handler failures and retries (kopf logs them as warnings and
    # errors), not a "succeeded" Event for every handled change.
    settings.posting.loggers = True
    settings.posting.level = logging.WARNING
    # Retry state of handlers being retried (transient annotations). A ``kopf.`` prefix:
    # kopf brands any other prefix with a ``<prefix>/kopf-managed`` annotation (one more
    # write per object) and then leaves every annotation under it, ``kaito.sh/runtime``
    # included, out of change detection.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kopf.kaito.sh")
    # Every change handler runs the same idempotent reconcile: the last handled state can
    # live in memory, which saves a PATCH and a watch event per handled change.
    settings.persistence.diffbase_storage = MemoryDiffBaseStorage(groups={"kaito.sh"})
    only_rag = config.controllers == {"ragengine"}
    settings.persistence.finalizer = (
        labels.FINALIZER_RAGENGINE if only_rag else labels.FINALIZER_WORKSPACE
    )
    settings.watching.server_timeout = 300
    if config.webhook_enabled:
        settings.admission.server = webhook_server(config)
        settings.admission.managed = None  # the chart renders the webhook configuration
    # The preset catalog is read once per process: now, rather than in the first reconcile.
    presets = list_presets()
    if presets:
        resolve_preset(presets[0].name)
    kube = operator_client(config, settings)
    # kopf retries a startup that failed (an API server not reachable yet): the metrics
    # and their server from an earlier attempt stay, or the port would be taken by itself.
    if memo.get("metrics") is None:
        memo.metrics = OperatorMetrics()
    if memo.get("metrics_server") is None and config.metrics_port is not None:
        memo.metrics_server = await serve_metrics(memo.metrics, config.metrics_port)
    memo.kube = kube
    if config.webhook_enabled and "ragengine" in config.controllers:
        await point_crd_at_webhook(kube, config)  # helm cannot template crds/
    workspaces = WorkspaceReconciler(kube, config)
    server = await workspaces.server()  # read once: newer fields only where it has them
    memo.controllers = {}
    if "workspace" in config.controllers:
        memo.controllers["workspace"] = Controller(workspaces, kube, memo.metrics)
        memo.controllers["inferenceset"] = Controller(
            InferenceSetReconciler(kube), kube, memo.metrics
        )
    if "ragengine" in config.controllers:
        memo.controllers["ragengine"] = Controller(
            RAGEngineReconciler(kube, config), kube, memo.metrics
        )
    # One resync loop per kind over kopf's live indexes (kopf passes them to startup too;
    # they fill as the watches list). A retried startup replaces an earlier attempt's.
    for task in memo.get("resyncs") or []:
        task.cancel()
    memo.resyncs = [
        asyncio.create_task(
            controller.resync_forever(
                kwargs[owners_index(param)], kwargs[children_index(param)], config.resync_seconds
            ),
            name=f"resync of {param}",
        )
        for param, controller in memo.controllers.items()
    ]
    logger.info(
        "kaito-operator started: node provisioner %s, Kubernetes %s",
        config.node_provisioner,
        "unknown (every field set)" if server == NEWEST else server,
    )


async def cleanup(*, memo: OperatorMemo, **_: Any) -> None:
    """Stop the resync loops and the metrics server and close the API client (a
    supervised restart's startup starts them again)."""
    for task in getattr(memo, "resyncs", None) or []:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    memo.resyncs = []
    server = getattr(memo, "metrics_server", None)
    if server is not None:
        await server.cleanup()
        memo.metrics_server = None
    kube = getattr(memo, "kube", None)
    if kube is not None:
        await kube.aclose()


def register(registry: kopf.OperatorRegistry) -> None:
    """Register the lifecycle handlers."""
    kopf.on.login(registry=registry)(login)
    kopf.on.startup(registry=registry)(startup)
    kopf.on.cleanup(registry=registry)(cleanup)
