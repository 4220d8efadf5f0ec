"""The server's Prometheus metrics: requests, latency and queue depth, in a registry of the app's own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


class Telemetry:
    """Collectors of one app (a registry each, so several apps in one process keep apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "carseg_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "carseg_request_seconds",
            "time from request to response, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge("carseg_queue_depth", "photos being processed or waiting", registry=self.registry)
        self.rejected = Counter(
            "carseg_queue_rejected", "requests refused because the queue was full", registry=self.registry
        )
