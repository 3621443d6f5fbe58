"""Prometheus metrics of a training run, served on ``/metrics`` while the job trains."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Gauge, start_http_server

__all__ = ["TrainingMetrics"]

logger = logging.getLogger(__name__)


class TrainingMetrics:
    """The gauges the progress callback keeps current (one registry per run)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()

        def gauge(name: str, documentation: str) -> Gauge:
            return Gauge(f"kaito_tuning_{name}", documentation, registry=self.registry)

        self.step = gauge("step", "Optimiser steps done")
        self.max_steps = gauge("max_steps", "Optimiser steps the run will take")
        self.epoch = gauge("epoch", "Fractional epoch reached")
        self.loss = gauge("loss", "Training loss at the last logging step")
        self.steps_per_second = gauge("steps_per_second", "Steps per second (last interval)")
        self.tokens_per_second = gauge("tokens_per_second", "Tokens per second (last interval)")
        self.tokens = gauge("tokens", "Tokens trained on so far")
        self.eta_seconds = gauge("eta_seconds", "Estimated seconds until the run ends")
        self.completed = gauge("completed", "1 once the adapter is saved")

    @contextmanager
    def serve(self, host: str, port: int) -> Iterator[int]:
        """Serve ``/metrics`` on ``host:port`` for the duration; yields the bound port."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        bound = int(server.server_address[1])
        logger.info("metrics: serving /metrics on %s:%d", host, bound)
        try:
            yield bound
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
