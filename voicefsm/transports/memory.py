"""An in-process far end: a pair of queues speaking the neutral call events, with no wire at all.

One side is the :class:`~voicefsm.transports.base.FarEnd` the driver reads and writes; the
other is the caller's hands: :meth:`MemoryFarEnd.start`, :meth:`press`, :meth:`play`,
:meth:`reach_mark`, :meth:`hang_up` queue events, and what the call sends arrives in
:attr:`intents` (or at ``on_intent``, as it is sent). The test line, the bridge and
``voicefsm chat`` use it.

It does not echo marks by default (``echoes_marks=False``): the driver then confirms them from
its playout clock. With ``echoes_marks=True`` nothing confirms them unless the far side calls
:meth:`reach_mark`: a phone that never reports playback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from voicefsm.core.events import (
    AudioIn,
    CallStarted,
    FarEndEvent,
    FarEndHungUp,
    KeyPressed,
    MarkReached,
)
from voicefsm.core.intents import OutboundItem
from voicefsm.errors import TransportClosed


class MemoryFarEnd:
    """Both ends of an in-process line. Create it on the call's loop."""

    def __init__(
        self,
        *,
        echoes_marks: bool = False,
        on_intent: Callable[[OutboundItem], None] | None = None,
    ) -> None:
        self.echoes_marks = echoes_marks
        self.on_intent = on_intent
        self.events: asyncio.Queue[FarEndEvent | None] = asyncio.Queue()
        self.intents: asyncio.Queue[OutboundItem] = asyncio.Queue()
        self.closed_reason: str | None = None

    @property
    def closed(self) -> bool:
        """The call has closed this line (hung up); nothing more is sent or delivered."""
        return self.closed_reason is not None

    # -- the far side: the caller's hands ---------------------------------------------------------

    def start(
        self, call_id: str, caller: str | None = None, parameters: Mapping[str, str] | None = None
    ) -> None:
        """The caller's phone starts the call."""
        self._put(CallStarted(call_id, caller, dict(parameters or {})))

    def press(self, digits: str) -> None:
        """The caller presses ``digits``, one after another without a pause."""
        for digit in digits:
            self._put(KeyPressed(digit))

    def play(self, ulaw: bytes) -> None:
        """One frame of the caller's audio."""
        self._put(AudioIn(ulaw))

    def reach_mark(self, name: str) -> None:
        """The caller's phone has played everything before mark ``name``."""
        self._put(MarkReached(name))

    def hang_up(self, reason: str = "caller hung up") -> None:
        """The caller hangs up."""
        self._put(FarEndHungUp(reason))

    def _put(self, event: FarEndEvent) -> None:
        if not self.closed:
            self.events.put_nowait(event)

    # -- the FarEnd side: what the driver uses ----------------------------------------------------

    async def receive(self) -> FarEndEvent | None:
        """The next event from the caller; None once the line is closed."""
        if self.closed:
            return None
        return await self.events.get()

    async def send(self, item: OutboundItem) -> None:
        """Hand ``item`` to the caller's side. Raises TransportClosed once the line is closed."""
        if self.closed:
            raise TransportClosed(f"the in-process line was closed ({self.closed_reason})")
        if self.on_intent is not None:
            self.on_intent(item)
        else:
            self.intents.put_nowait(item)

    async def close(self, reason: str) -> None:
        """Hang up the line; idempotent."""
        if self.closed:
            return
        self.closed_reason = reason
        self.events.put_nowait(None)
