"""State kinds: one module per kind, each a :class:`~voicefsm.flow.kinds.base.StateKind`.

========  ===========================================================================
Say       spoken, tts_error, disconnected
Ask       filled, no_input, no_match, tts_error, stt_error, disconnected
Do        done (or each named result), failure, timed_out, disconnected
State     (a plain decision state) an eventless transition, taken at once
endings   Hangup, Transfer, SendSms, Echo: final; the runtime speaks, acts, hangs up
========  ===========================================================================

``error.execution`` (an exception in flow code) and ``limit_reached`` (a call limit) can reach
every state that is not final. A kind of your own is a subclass of :class:`StateKind` with an
:class:`Activity`; see :mod:`voicefsm.flow.kinds.base`.
"""

from voicefsm.flow.kinds.ask import Ask
from voicefsm.flow.kinds.base import (
    ALWAYS_RECEIVED,
    DISCONNECTED,
    DONE,
    ERROR_EXECUTION,
    FAILURE,
    FILLED,
    LIMIT_REACHED,
    MACHINE_ANSWERED,
    NO_INPUT,
    NO_MATCH,
    RUNTIME_EVENTS,
    SPOKEN,
    STT_ERROR,
    TIMED_OUT,
    TTS_ERROR,
    Activity,
    ActivityHost,
    CallerKey,
    CallerSaid,
    CallerSpeaking,
    FlowStuckError,
    Message,
    PlainState,
    PromptEnded,
    StateKind,
    SttFailed,
    TimerFired,
    cancel_and_wait,
    events_received,
    is_ending,
    kind_for,
    kind_of,
    outcome_of,
)
from voicefsm.flow.kinds.do import Do, Result, StepStub, StepStubs
from voicefsm.flow.kinds.echo import Echo
from voicefsm.flow.kinds.endings import Ending, Hangup, SendSms, Transfer
from voicefsm.flow.kinds.say import Say

#: The old name of :class:`StateKind`.
VoiceState = StateKind

__all__ = [
    "ALWAYS_RECEIVED",
    "DISCONNECTED",
    "DONE",
    "ERROR_EXECUTION",
    "FAILURE",
    "FILLED",
    "LIMIT_REACHED",
    "MACHINE_ANSWERED",
    "NO_INPUT",
    "NO_MATCH",
    "RUNTIME_EVENTS",
    "SPOKEN",
    "STT_ERROR",
    "TIMED_OUT",
    "TTS_ERROR",
    "Activity",
    "ActivityHost",
    "Ask",
    "CallerKey",
    "CallerSaid",
    "CallerSpeaking",
    "Do",
    "Echo",
    "Ending",
    "FlowStuckError",
    "Hangup",
    "Message",
    "PlainState",
    "PromptEnded",
    "Result",
    "Say",
    "SendSms",
    "StateKind",
    "StepStub",
    "StepStubs",
    "SttFailed",
    "TimerFired",
    "Transfer",
    "VoiceState",
    "cancel_and_wait",
    "events_received",
    "is_ending",
    "kind_for",
    "kind_of",
    "outcome_of",
]
