"""What the server needs to run calls: the handler, recognizer factories, taps and hooks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from voicefsm.runtime.call import AudioTap, Call, SttFactory
from voicefsm.runtime.media_loop import CallHandler, CallLimits

StatusHook = Callable[[Mapping[str, str]], Awaitable[None]]
CallHook = Callable[[Call], Awaitable[None]]


@dataclass(slots=True)
class CallServices:
    """Per-server wiring, used to build each call. All fields are optional."""

    handler: CallHandler | None = None
    stt_factory: SttFactory | None = None
    stt_secondary_factory: SttFactory | None = None
    tap_factory: Callable[[str], Awaitable[AudioTap | None]] | None = None
    on_call_started: CallHook | None = None
    on_call_ended: CallHook | None = None
    on_status: StatusHook | None = None
    limits: CallLimits = field(default_factory=CallLimits)
