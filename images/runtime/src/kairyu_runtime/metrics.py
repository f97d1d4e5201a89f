"""Prometheus metrics of the runtime: requests, latency, tokens and time to first token.

A registry per server keeps tests that build several apps in one process apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "kairyu_runtime_requests",
            "HTTP requests by route and status code",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kairyu_runtime_request_duration_seconds",
            "HTTP request duration by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "kairyu_runtime_prompt_tokens", "prompt tokens processed", registry=self.registry
        )
        self.generation_tokens = Counter(
            "kairyu_runtime_generation_tokens", "tokens generated", registry=self.registry
        )
        self.first_token = Histogram(
            "kairyu_runtime_time_to_first_token_seconds",
            "time from a streaming request to its first text",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.running = Gauge(
            "kairyu_runtime_requests_running",
            "generation requests queued or running",
            registry=self.registry,
        )
        self.adapters = Gauge(
            "kairyu_runtime_adapter_strength",
            "LoRA adapters merged into the model, by strength",
            ["adapter"],
            registry=self.registry,
        )
