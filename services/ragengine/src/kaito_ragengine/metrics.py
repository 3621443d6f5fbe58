"""Prometheus instruments, one registry per app (``routers.middleware`` records requests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)


class Metrics:
    """The service's ``rag_*`` metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rag_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rag_request_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.embedding_seconds = Histogram(
            "rag_embedding_seconds",
            "Time to embed one batch",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.embedded_texts = Counter(
            "rag_embedded_texts", "Texts embedded", ["kind"], registry=self.registry
        )
        self.query_batch_size = Histogram(
            "rag_query_batch_size",
            "Queries embedded together in one micro-batch",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
            registry=self.registry,
        )
        self.retrieve_top_score = Histogram(
            "rag_retrieve_top_cosine",
            "Cosine similarity of the best /retrieve result",
            buckets=(-0.5, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            registry=self.registry,
        )
        self.documents = Gauge(
            "rag_index_documents", "Documents per index", ["index"], registry=self.registry
        )
        self.snapshots = Counter(
            "rag_snapshots",
            "Snapshots written or restored",
            ["operation", "outcome"],
            registry=self.registry,
        )
