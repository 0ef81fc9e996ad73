"""The echo window: while the agent speaks, and briefly after, the caller's line carries its echo."""

from __future__ import annotations

from collections.abc import Callable


class EchoWindow:
    """Whether a transcript arriving now may be the agent's own voice coming back down the line.

    Open while the agent speaks and for ``after_s`` seconds after it stops, measured on ``clock``
    (a monotonic clock in seconds; tests pass a fake one).
    """

    def __init__(self, after_s: float, clock: Callable[[], float]) -> None:
        self.after_s = after_s
        self._clock = clock
        self._speaking = False
        self._open_until = float("-inf")

    def set_speaking(self, speaking: bool) -> None:
        """The agent starts or stops talking; stopping keeps the window open for ``after_s``."""
        if speaking:
            self._speaking = True
        elif self._speaking:
            self._speaking = False
            self._open_until = self._clock() + self.after_s

    @property
    def open(self) -> bool:
        """True while transcripts should be treated as echo."""
        return self._speaking or self._clock() < self._open_until
