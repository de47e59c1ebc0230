"""Prometheus metrics of one server (its own registry, so several apps can live in one process).

    metrics = Metrics()
    metrics.requests.labels(route="/v1/audio/speech", status="200").inc()
    body, content_type = metrics.render()          # GET /metrics
"""
from __future__ import annotations

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)

SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
RATIOS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16)


class Metrics:
    """The server's counters, histograms and gauges (names start with ``stepforge_``)."""

    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("stepforge_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.latency = Histogram("stepforge_request_seconds", "time to the whole response (streams: the last "
                                 "byte)", ["route"], buckets=SECONDS, registry=r)
        self.first_audio = Histogram("stepforge_time_to_first_audio_seconds", "request start to the first audio "
                                     "bytes", buckets=SECONDS, registry=r)
        self.audio_seconds = Counter("stepforge_audio_seconds", "seconds of audio generated", registry=r)
        self.generated_ids = Counter("stepforge_generated_ids", "audio ids generated", registry=r)
        self.rtf = Histogram("stepforge_real_time_factor", "generation + decode wall seconds per audio second",
                             buckets=RATIOS, registry=r)
        self.running = Gauge("stepforge_requests_running", "speech requests admitted and not waiting for the "
                             "engine (generating, decoding or streaming)", registry=r)
        self.queued = Gauge("stepforge_requests_queued", "speech requests waiting for the engine", registry=r)
        self.batch_size = Histogram("stepforge_batch_size", "requests per decoding step (torch) or engine call",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.cancelled = Counter("stepforge_cancelled", "speech requests whose client left before the end",
                                 registry=r)
        self.rejected = Counter("stepforge_rejected", "speech requests refused by the concurrency limit",
                                registry=r)

    def render(self) -> tuple[bytes, str]:
        """(the Prometheus text exposition, its content type)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
