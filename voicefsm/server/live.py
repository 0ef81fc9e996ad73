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


class LiveFeeds:
    """The live feeds of a server's calls; a viewer may ask for a call a moment before it starts."""

    def __init__(self) -> None:
        self._feeds: dict[str, LiveFeed] = {}
        self._added = asyncio.Condition()

    def get(self, call_sid: str) -> LiveFeed | None:
        return self._feeds.get(call_sid)

    async def add(self, feed: LiveFeed) -> None:
        self._feeds[feed.call_sid] = feed
        async with self._added:
            self._added.notify_all()

    def pop(self, call_sid: str) -> LiveFeed | None:
        return self._feeds.pop(call_sid, None)

    async def wait_for(self, call_sid: str, timeout_s: float) -> LiveFeed | None:
        """The feed of ``call_sid``, waiting up to ``timeout_s`` for the call to start."""
        try:
            async with asyncio.timeout(timeout_s), self._added:
                await self._added.wait_for(lambda: call_sid in self._feeds)
        except TimeoutError:
            return None
        return self._feeds[call_sid]


class LiveFeed:
    """What one call's viewers see: a snapshot, then every update. Publishing never blocks."""

    def __init__(self, call_sid: str) -> None:
        self.call_sid = call_sid
        self.state: str | None = None
        self.slots: dict[str, Any] = {}
        self.transcript: list[dict[str, Any]] = []
        self.path: list[dict[str, str]] = []
        self.ended: str | None = None
        self._viewers: set[asyncio.Queue[dict[str, Any] | None]] = set()

    def snapshot(self) -> dict[str, Any]:
        return {
            "type": "snapshot",
            "state": self.state,
            "slots": dict(self.slots),
            "transcript": list(self.transcript),
            "path": list(self.path),
            "ended": self.ended,
        }

    def transition(self, source: str, event: str, target: str) -> None:
        self.state = target
        self.path.append({"source": source, "event": event, "target": target})
        self._publish({"type": "state", "state": target, "source": source, "event": event})

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
