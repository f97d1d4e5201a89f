"""How often the watcher sends one follower a kind's snapshot on Service Bus, at most.

A snapshot is every object of a kind, so a request costs the watcher, the namespace and the bill
far more than the request itself: whoever may send requests (every service's credential) could
otherwise make the watcher send whole kinds without end. So the watcher sends each reader each
kind at most once per interval. Requests that come sooner are not lost: they are held, and one
snapshot answers all of them when the interval has passed (a follower takes any snapshot addressed
to it, whatever request it answers). What is held is bounded by the topology: one request per
reader and kind. Pure, so that the pacing is tested without a broker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kairyu_contracts.objectstate import Kind

DEFAULT_INTERVAL_S = 5.0

Asker = tuple[str, Kind]
"""A reader (its subscription's name) and the kind it asks for."""


@dataclass
class SnapshotPacer:
    """Decides when each (reader, kind) request is answered: now, or when its interval ends."""

    interval_s: float = DEFAULT_INTERVAL_S
    _sent_at: dict[Asker, float] = field(default_factory=dict)
    _held: dict[Asker, str] = field(default_factory=dict)
    """A request waiting for its interval to end: the latest one's id (its snapshot's id)."""

    def ask(self, reader: str, kind: Kind, request_id: str, *, now: float) -> bool:
        """True: answer now (it is counted as sent); False: held until `due`."""
        asker = (reader, kind)
        sent = self._sent_at.get(asker)
        if sent is not None and now - sent < self.interval_s:
            self._held[asker] = request_id
            return False
        self._held.pop(asker, None)  # this answer covers an earlier held one too
        self._sent_at[asker] = now
        return True

    def due(self, *, now: float) -> list[tuple[str, Kind, str]]:
        """The held requests whose interval has ended, each as (reader, kind, request id).

        They are counted as sent now: the caller sends them.
        """
        ready = [
            asker for asker in self._held if now - self._sent_at.get(asker, now) >= self.interval_s
        ]
        answers = [(reader, kind, self._held.pop((reader, kind))) for reader, kind in ready]
        for reader, kind, _ in answers:
            self._sent_at[(reader, kind)] = now
        return answers

    @property
    def holding(self) -> int:
        """How many requests wait for their interval to end."""
        return len(self._held)
