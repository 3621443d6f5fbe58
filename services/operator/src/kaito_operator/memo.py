"""The operator's typed kopf memo: settings, the API client and the controllers.

kopf passes ``memo`` to every handler (a shallow copy per watched object, so these
attributes are shared); :func:`kaito_operator.handlers.lifecycle.startup` fills it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import kopf

if TYPE_CHECKING:
    import asyncio

    from aiohttp import web

    from kaito_operator.controller import Controller
    from kaito_operator.kube import KubeClient
    from kaito_operator.metrics import OperatorMetrics
    from kaito_operator.settings import OperatorSettings

__all__ = ["OperatorMemo"]


class OperatorMemo(kopf.Memo):
    """What the handlers share (kopf's ``Memo`` is a dict with attribute access)."""

    settings: OperatorSettings
    """The operator's settings (given when kopf starts)."""
    kube: KubeClient
    """The operator's API client."""
    metrics: OperatorMetrics
    """Prometheus metrics."""
    metrics_server: web.AppRunner | None
    """The ``/metrics`` server (None: not served)."""
    controllers: dict[str, Controller[Any]]
    """The generic controller of each enabled owner kind: ``workspace``, ``inferenceset``
    (with the workspace controller), ``ragengine``."""
    resyncs: list[asyncio.Task[None]]
    """The controllers' resync loops (:meth:`Controller.resync_forever`)."""
