"""Prometheus metrics of the runtime: requests, latency, tokens and time to first token.

A registry per server keeps tests that build several apps in one process apart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Generated(Protocol):
    """What the counters need of engine.Completion (this module does not import torch)."""

    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...


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
        # The worker's own count: a job leaves only when the worker is done with it, so this
        # shows a generation that goes on after its caller left (requests_running does not).
        self.admitted = Gauge(
            "kairyu_runtime_generations_admitted",
            "generations running or waiting on the worker",
            registry=self.registry,
        )
        # vLLM's own names, so one autoscaling trigger reads vLLM and this server alike
        # (kairyu's activator sums them over a set's pods for KEDA).
        self.vllm_running = Gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches (vLLM's name).",
            ["model_name"],
            registry=self.registry,
        )
        self.vllm_waiting = Gauge(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed (vLLM's name).",
            ["model_name"],
            registry=self.registry,
        )
        self.adapters = Gauge(
            "kairyu_runtime_adapter_strength",
            "LoRA adapters merged into the model, by strength",
            ["adapter"],
            registry=self.registry,
        )

    def count(self, done: Generated) -> None:
        """A finished generation's tokens (called on the worker thread; counters are locked)."""
        self.prompt_tokens.inc(done.prompt_tokens)
        self.generation_tokens.inc(done.completion_tokens)


class Measure:
    """Counts and times every HTTP request by route and status (a plain ASGI middleware).

    Plain ASGI rather than Starlette's BaseHTTPMiddleware, which wraps `receive` and would hide
    a client's disconnect from the handlers that stop generating when their caller is gone.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # what the server answers if the app raises before starting a response

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # The router records the matched route in the scope it was given (this one).
            route = getattr(scope.get("route"), "path", "unmatched")
            self._metrics.requests.labels(route, str(status)).inc()
            self._metrics.latency.labels(route).observe(time.perf_counter() - began)
