"""A batch writer's short wait for more work, cut short while someone waits for the writes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class Linger:
    """Lets a writer task's batch gather for ``seconds`` after its first item.

    A transaction costs about as much for one item as for fifty, and the writes are off the calls'
    path, so a writer waits a little before it writes, except while someone waits for the writes
    (``with linger.hurried():``, a flush), once after :meth:`cut_short` (a call's end, soon looked
    for), or for good once :meth:`stop` ran (a close).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._hurry = asyncio.Event()
        self._hurrying = 0
        self._stopped = False

    async def pause(self, *, full: bool = False) -> None:
        """Wait up to ``seconds``; at once when the batch is ``full``, hurried, cut short, or stopped."""
        if self.seconds <= 0 or full:
            return
        if not self._hurry.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.seconds):
                    await self._hurry.wait()
        if not self._hurrying and not self._stopped:
            self._hurry.clear()  # a cut_short() ends one pause

    def cut_short(self) -> None:
        """End the pause in progress, or the next one, now: what was just queued is soon looked for."""
        self._hurry.set()

    @contextlib.contextmanager
    def hurried(self) -> Iterator[None]:
        """No pause while this block runs (someone is waiting for what is queued)."""
        self._hurrying += 1
        self._hurry.set()
        try:
            yield
        finally:
            self._hurrying -= 1
            if not self._hurrying and not self._stopped:
                self._hurry.clear()

    def stop(self) -> None:
        """No pause from now on (the writer is closing: what is queued goes now)."""
        self._stopped = True
        self._hurry.set()
