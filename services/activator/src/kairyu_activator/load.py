"""A set's load as KEDA reads it: its pods' vLLM gauge plus the requests waiting for it (pure).

Both runtimes export vLLM's own names (`vllm:num_requests_waiting`, `vllm:num_requests_running`),
so one parser serves vLLM and the transformers server. A set at zero has
no pod to ask: the requests that reached the activator meanwhile are its load (at most 1: they
ask for a replica, and a flood of them must not order more), which lifts it above KEDA's
activation threshold (0) and wakes the set.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families


class MetricsFormatError(ValueError):
    """A pod's `/metrics` is not the Prometheus text format."""


def gauge_sum(text: str, metric: str) -> float:
    """The sum of every sample of `metric` in Prometheus text `text` (0 when it has none).

    vLLM labels its gauges by model (`model_name`), and a pod may serve adapters too: all of a
    pod's samples of one gauge are its load. NaN and infinite samples count as nothing.
    """
    # The parser names a family without its `_total`-style suffix; a gauge keeps its name.
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, IndexError) as exc:
        raise MetricsFormatError(str(exc)) from exc
    total = 0.0
    for family in families:
        for sample in family.samples:
            if sample.name == metric and math.isfinite(sample.value) and sample.value > 0:
                total += sample.value
    return total


@dataclass
class Demand:
    """Requests that reached the activator for one set while it had no ready pod."""

    window_s: float
    times: deque[float] = field(default_factory=deque)
    limit: int = 10_000  # bounded: a flood of requests at zero is still one set's load

    def add(self, now: float) -> None:
        self.times.append(now)
        while len(self.times) > self.limit:
            self.times.popleft()

    def count(self, now: float) -> int:
        """The requests of the last `window_s` seconds."""
        while self.times and self.times[0] < now - self.window_s:
            self.times.popleft()
        return len(self.times)

    def clear(self) -> None:
        self.times.clear()
