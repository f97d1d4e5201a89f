"""Stop sequences over streamed text.

A stop string may arrive split across two deltas, so text that could still be the start of a stop
string is held back until the next delta decides it. The stop string itself is never returned
(OpenAI's behaviour).
"""

from __future__ import annotations


class StopTrimmer:
    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Text that can be emitted now."""
        if self.stopped:
            return ""
        text = self._held + delta
        cut = min((i for s in self._stops if (i := text.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = self._partial_suffix(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def finish(self) -> str:
        """What is left once generation ended without a stop string."""
        rest, self._held = self._held, ""
        return "" if self.stopped else rest

    def _partial_suffix(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best
