"""A call session: the complete :class:`Call` and what runs on it, opened for one call and closed once.

Whoever takes calls opens sessions: the server's services (with the recorder tap, the
records, the live view and the real recognizers), the test kit (scripted providers on a
virtual clock), ``voicefsm chat`` (a manual clock). :func:`voicefsm.runtime.driver.run_call`
opens the session for the far end's :class:`~voicefsm.core.events.CallStarted`, drives the call,
and leaves the session's context once the call's last task has been awaited.

:class:`FlowRun` is the one place a :class:`FlowRuntime` is built.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from voicefsm.core.actions import TelephonyActions
from voicefsm.core.events import CallStarted
from voicefsm.flow.chart import VoiceFlow
from voicefsm.providers.base import TextToSpeech
from voicefsm.runtime.call import Call
from voicefsm.runtime.clock import Clock, LoopClock
from voicefsm.runtime.flow_runtime import FlowListener, FlowResult, FlowRuntime, RuntimeLimits
from voicefsm.runtime.snapshot import FlowSnapshot, SnapshotSink

CallHandler = Callable[[Call], Awaitable[object]]
"""What runs on a call: a flow (:class:`FlowRun`) or, in tests and benchmarks, a plain coroutine."""


@dataclass(slots=True)
class CallSession:
    """One call's world: the call, what runs on it, and the clock its playback is timed on."""

    call: Call
    handler: CallHandler | None = None
    clock: Clock = field(default_factory=LoopClock)


SessionOpener = Callable[[CallStarted], AbstractAsyncContextManager[CallSession]]
"""Opens the session for a call that has started; leaving the context closes it (once)."""


class FlowRun:
    """``flow`` on ``call`` with these providers and listeners: the one place a :class:`FlowRuntime` is built.

    ``resources`` and ``stubs`` are handed to the runtime only when given; ``speak_ahead`` makes it
    synthesize each next prompt ahead of need (its prefetcher is closed with the run). ``snapshots``
    receives the flow's snapshots; ``restore`` resumes the flow from one (runtime/snapshot.py). Use it as the
    session's handler: it runs the flow, keeps its result (or its error), and closes the
    synthesizer when the flow ends, whatever ended it.
    """

    def __init__(
        self,
        call: Call,
        flow: type[VoiceFlow] | VoiceFlow,
        tts: TextToSpeech,
        *,
        actions: TelephonyActions | None = None,
        clock: Clock | None = None,
        listeners: Sequence[FlowListener] = (),
        today: Callable[[], dt.date] | None = None,
        limits: RuntimeLimits | None = None,
        resources: Mapping[str, object] | None = None,
        stubs: object | None = None,
        speak_ahead: bool = False,
        restore: FlowSnapshot | None = None,
        snapshots: SnapshotSink | None = None,
    ) -> None:
        extra: dict[str, Any] = {}
        if restore is not None:
            extra["restore"] = restore
        if snapshots is not None:
            extra["snapshots"] = snapshots
        if today is not None:
            extra["today"] = today
        if resources is not None:
            extra["resources"] = resources
        if stubs is not None:
            extra["stubs"] = stubs
        self.call = call
        self.tts = tts
        self.runtime = FlowRuntime(
            flow,
            call,
            tts,
            actions=actions,
            clock=clock,
            listeners=listeners,
            limits=limits,
            speak_ahead=speak_ahead,
            **extra,
        )
        self.result: FlowResult | None = None
        self.error: BaseException | None = None

    async def __call__(self, call: Call) -> FlowResult:
        if call is not self.call:
            raise ValueError("a FlowRun runs on the call it was built for")
        try:
            self.result = await self.runtime.run()
            return self.result
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            await self.tts.aclose()
