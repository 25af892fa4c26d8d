"""Prometheus metrics, one registry per app so tests and reloads never collide.

Labels are bounded (route templates, status codes, decisions): message texts never become label values.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "saring_requests", "HTTP requests by route and status.", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "saring_request_duration_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.batch_size = Histogram(
            "saring_batch_size", "Messages per model forward.", buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r
        )
        self.forward_seconds = Histogram(
            "saring_forward_duration_seconds",
            "Model forward time per batch.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.real_tokens = Counter("saring_batch_real_tokens", "Tokens of real text sent to the model.", registry=r)
        self.padded_tokens = Counter(
            "saring_batch_padded_tokens", "Tokens the model computed, padding included.", registry=r
        )
        self.queue_depth = Gauge("saring_queue_depth", "Messages waiting for the model.", registry=r)
        self.inflight = Gauge("saring_inflight_requests", "Scoring requests admitted and not yet answered.", registry=r)
        self.refused = Counter(
            "saring_refused_requests", "Requests refused before scoring, by reason.", ["reason"], registry=r
        )
        self.decisions = Counter("saring_decisions", "Scored messages by decision.", ["decision"], registry=r)
        self.spam_flags = Counter("saring_spam_flags", "Scored messages flagged is_spam.", registry=r)
        self.model_info = Info("saring_model", "The model being served.", registry=r)
        self.reloads = Counter("saring_model_reloads", "Model reload attempts by outcome.", ["outcome"], registry=r)
        self.flood_unavailable = Counter(
            "saring_flood_unavailable",
            "Score calls answered with near_duplicates null because the shared flood store (Redis) failed or is down.",
            registry=r,
        )
        self.flood_store_up = Gauge(
            "saring_flood_store_up", "1 while the shared flood store (Redis) answers, 0 during an outage.", registry=r
        )
