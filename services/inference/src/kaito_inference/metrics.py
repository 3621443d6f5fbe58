"""Prometheus metrics of the inference server (one registry per app, so tests can run many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["LATENCY_BUCKETS", "InferenceMetrics"]

#: Seconds; covers a 135M model on 2 cores up to long generations on a busy server.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 64, 128)


class InferenceMetrics:
    """Every metric the server exports, prefixed ``kaito_inference_``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests_running = Gauge(
            "kaito_inference_requests_running", "Requests in the running batch", registry=r
        )
        self.requests_waiting = Gauge(
            "kaito_inference_requests_waiting", "Requests queued for the batch", registry=r
        )
        self.requests = Counter(
            "kaito_inference_requests",
            "Finished requests by model and finish reason",
            ["model", "finish_reason"],
            registry=r,
        )
        self.rejected = Counter(
            "kaito_inference_requests_rejected",
            "Requests rejected with 429 because the waiting queue was full",
            registry=r,
        )
        self.prompt_tokens = Counter(
            "kaito_inference_prompt_tokens", "Prompt tokens processed", registry=r
        )
        self.generation_tokens = Counter(
            "kaito_inference_generation_tokens", "Tokens generated", registry=r
        )
        self.time_to_first_token = Histogram(
            "kaito_inference_time_to_first_token_seconds",
            "Seconds from request arrival to its first generated token",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e_latency = Histogram(
            "kaito_inference_e2e_request_latency_seconds",
            "Seconds from request arrival to its last token",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cpu_threads = Gauge(
            "kaito_inference_cpu_threads",
            "Intra-op CPU threads the model runs with now (fewer under CPU contention)",
            registry=r,
        )
        self.batch_size = Histogram(
            "kaito_inference_batch_size",
            "Sequences in each forward pass, by phase (prefill or decode)",
            ["phase"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )

    def observe_batch(self, phase: str, size: int) -> None:
        """Record one forward pass of ``size`` sequences."""
        self.batch_size.labels(phase=phase).observe(size)
