"""Prometheus metrics of the operator, served on ``/metrics`` at ``metrics_port``.

Counts reconciles by kind and result, times them, and tracks how many Workspaces are in
each state (and RAGEngines ready or not), like KAITO's ``kaito_workspace_count``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import kopf
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from kaito_operator.errors import InvalidSpecError

__all__ = ["OperatorMetrics", "serve_metrics"]


class OperatorMetrics:
    """The operator's metrics in their own registry (nothing global, nothing at import)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "kaito_operator_reconciles",
            "Reconciles by kind and result (ok, invalid, retry, error).",
            ["kind", "result"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "kaito_operator_reconcile_seconds",
            "Time to apply an object's children.",
            ["kind"],
            registry=self.registry,
        )
        self.objects = Gauge(
            "kaito_operator_objects",
            "Workspaces and RAGEngines by kind and state.",
            ["kind", "state"],
            registry=self.registry,
        )
        self._states: dict[tuple[str, str, str], str] = {}
        self._shown: set[tuple[str, str]] = set()

    @contextmanager
    def reconcile(self, kind: str) -> Iterator[None]:
        """Time one reconcile and count its result by the exception it ends with."""
        started = time.perf_counter()
        result = "ok"
        try:
            yield
        except InvalidSpecError:
            result = "invalid"
            raise
        except kopf.TemporaryError:
            result = "retry"
            raise
        except Exception:
            result = "error"
            raise
        finally:
            self.reconciles.labels(kind, result).inc()
            self.reconcile_seconds.labels(kind).observe(time.perf_counter() - started)

    def set_state(self, kind: str, namespace: str, name: str, state: str | None) -> None:
        """Record an object's state (None: the object is gone)."""
        key = (kind, namespace, name)
        if state is None:
            self._states.pop(key, None)
        else:
            self._states[key] = state
        counts: dict[str, int] = {}
        for (k, _, _), value in self._states.items():
            if k == kind:
                counts[value] = counts.get(value, 0) + 1
        for shown_kind, shown_state in self._shown:
            if shown_kind == kind and shown_state not in counts:
                self.objects.labels(kind, shown_state).set(0)  # a state that emptied
        for value, count in counts.items():
            self.objects.labels(kind, value).set(count)
            self._shown.add((kind, value))

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


async def serve_metrics(metrics: OperatorMetrics, port: int) -> web.AppRunner:
    """Start the ``/metrics`` HTTP server; the caller cleans the runner up."""

    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104 (scraped through the pod IP)
    return runner
