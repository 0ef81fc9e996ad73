"""A live view of each call for the browser: state changes, turns and slots as they happen."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

#: A viewer further behind than this is dropped rather than slowing the call down.
VIEWER_QUEUE = 256


def _now() -> str:
    return datetime.now(UTC).isoformat()


class LiveFeed:
    """What one call's viewers see: a snapshot, then every update. Publishing never blocks."""

    def __init__(self, call_sid: str) -> None:
        self.call_sid = call_sid
        self.state: str | None = None
        self.slots: dict[str, Any] = {}
        self.transcript: list[dict[str, Any]] = []
        self.ended: str | None = None
        self._viewers: set[asyncio.Queue[dict[str, Any] | None]] = set()

    def snapshot(self) -> dict[str, Any]:
        return {
            "type": "snapshot",
            "state": self.state,
            "slots": dict(self.slots),
            "transcript": list(self.transcript),
            "ended": self.ended,
        }

    def state_changed(self, state: str) -> None:
        self.state = state
        self._publish({"type": "state", "state": state})

    def turn(self, speaker: str, text: str) -> None:
        entry = {"speaker": speaker, "text": text, "at": _now()}
        self.transcript.append(entry)
        self._publish({"type": "turn", **entry})

    def slot(self, name: str, value: Any) -> None:
        self.slots[name] = value
        self._publish({"type": "slot", "name": name, "value": value})

    def end(self, reason: str) -> None:
        if self.ended is not None:
            return
        self.ended = reason
        self._publish({"type": "ended", "reason": reason})
        for queue in self._viewers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        """A queue of updates for one viewer; ``None`` means the call is over."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=VIEWER_QUEUE)
        queue.put_nowait(self.snapshot())
        if self.ended is not None:
            queue.put_nowait(None)
        else:
            self._viewers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._viewers.discard(queue)

    def _publish(self, message: dict[str, Any]) -> None:
        for queue in list(self._viewers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                self._viewers.discard(queue)  # too slow: it reconnects and gets a fresh snapshot
