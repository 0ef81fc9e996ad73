"""Mark ledger: unique mark names and whether an echoed mark was played or cleared.

Twilio echoes a mark when the audio queued before it has played, and also echoes every
pending mark after a ``clear`` although that audio was never heard. On the wire the two
look the same, so the ledger remembers which names were pending when a clear was sent.
"""

from __future__ import annotations

import enum
import itertools
from collections import OrderedDict


class MarkOutcome(enum.Enum):
    """How a mark ended."""

    PLAYED = "played"
    INTERRUPTED = "interrupted"
    DISCONNECTED = "disconnected"
    UNKNOWN = "unknown"


MARK_SEPARATOR = "#"


def mark_label(name: str) -> str:
    """The logical label a unique mark name was made from (``"greet#3"`` -> ``"greet"``)."""
    return name.rsplit(MARK_SEPARATOR, 1)[0]


class MarkLedger:
    """Hands out unique mark names and classifies their echoes. Pure bookkeeping, no I/O."""

    _MAX_REMEMBERED_CLEARED = 256

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._pending: dict[str, None] = {}
        self._cleared: OrderedDict[str, None] = OrderedDict()

    def new(self, label: str) -> str:
        """A fresh name for ``label``: two marks with one label never share a name."""
        if not label or MARK_SEPARATOR in label:
            raise ValueError(
                f"mark label {label!r} must be non-empty and must not contain {MARK_SEPARATOR!r}"
            )
        name = f"{label}{MARK_SEPARATOR}{next(self._counter)}"
        self._pending[name] = None
        return name

    @property
    def pending(self) -> tuple[str, ...]:
        """Marks sent and not yet echoed or cleared, oldest first."""
        return tuple(self._pending)

    def clear(self) -> list[str]:
        """A clear was sent: every pending mark is now interrupted. Returns their names."""
        cleared = list(self._pending)
        self._pending.clear()
        for name in cleared:
            self._cleared[name] = None
        while len(self._cleared) > self._MAX_REMEMBERED_CLEARED:
            self._cleared.popitem(last=False)
        return cleared

    def echoed(self, name: str) -> MarkOutcome:
        """The far end echoed ``name``: was it played, cleared, or never ours?"""
        if name in self._pending:
            del self._pending[name]
            return MarkOutcome.PLAYED
        if name in self._cleared:
            del self._cleared[name]
            return MarkOutcome.INTERRUPTED
        return MarkOutcome.UNKNOWN

    def disconnect(self) -> list[str]:
        """The call ended: every pending mark will never be echoed. Returns their names."""
        names = list(self._pending)
        self._pending.clear()
        self._cleared.clear()
        return names
