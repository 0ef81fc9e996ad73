"""What the server needs to run calls: how to open each call's session, status hooks and limits."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from voicefsm.core.events import CallStarted
from voicefsm.runtime.call import Call, SttFactory
from voicefsm.runtime.driver import CallLimits
from voicefsm.runtime.session import CallHandler, CallSession, SessionOpener
from voicefsm.runtime.snapshot import SnapshotKeeper

StatusHook = Callable[[Mapping[str, str]], Awaitable[None]]


@dataclass(slots=True)
class CallServices:
    """Per-server wiring. ``open_session`` opens each call's session (the flow service's does).

    Without one, each call gets a plain session: ``handler`` on a call with ``stt_factory``'s
    recognizer (tests and benchmarks use this).
    """

    handler: CallHandler | None = None
    stt_factory: SttFactory | None = None
    open_session: SessionOpener | None = None
    on_status: StatusHook | None = None
    limits: CallLimits = field(default_factory=CallLimits)
    #: The flows' snapshots, when calls can resume after a lost stream (scale/resume).
    snapshots: SnapshotKeeper | None = None

    def session(self, started: CallStarted) -> contextlib.AbstractAsyncContextManager[CallSession]:
        """The session for a call that has started (already admitted, its parameters cleaned)."""
        if self.open_session is not None:
            return self.open_session(started)
        return self._plain_session(started)

    @contextlib.asynccontextmanager
    async def _plain_session(self, started: CallStarted) -> AsyncIterator[CallSession]:
        call = Call(
            call_sid=started.call_id,
            caller=started.caller,
            parameters=started.parameters,
            stt_factory=self.stt_factory,
        )
        yield CallSession(call, self.handler)
