"""What the records read back: pydantic models that FastAPI can return as they are."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, computed_field

Speaker = Literal["agent", "caller"]
Via = Literal["speech", "dtmf", "text"]
Direction = Literal["inbound", "outbound"]

SPEAKERS: tuple[Speaker, ...] = ("agent", "caller")
VIAS: tuple[Via, ...] = ("speech", "dtmf", "text")
DIRECTIONS: tuple[Direction, ...] = ("inbound", "outbound")
#: The outcomes voicefsm itself records; any other short word is stored as given.
OUTCOMES: tuple[str, ...] = ("completed", "hung_up", "transferred", "error", "abandoned", "incomplete")


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)


class TurnLatencyRecord(_Record):
    """How long a caller turn waited for its answer, by stage, in milliseconds (None: did not happen).

    ``commit_ms`` end of speech (or the last key) to the final transcript; ``parse_ms`` to the state
    making sense of it; ``transition_ms`` to the chart having moved; ``first_audio_ms`` to the first
    audio frame of the answer sent to the caller. ``tts_first_byte_ms`` is how long the answer's
    synthesis took to its first audio, ``tts_source`` where it came from (``memory`` or ``disk``:
    the prompt cache; ``provider``), ``prefetched`` whether it was started ahead of need.
    """

    commit_ms: int | None
    parse_ms: int | None
    transition_ms: int | None
    first_audio_ms: int | None
    tts_first_byte_ms: int | None = None
    tts_source: str | None = None
    prefetched: bool | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_ms(self) -> int | None:
        """End of speech to the first audio of the answer; None when it was never answered."""
        stages = (self.commit_ms, self.parse_ms, self.transition_ms, self.first_audio_ms)
        return None if any(stage is None for stage in stages) else sum(s for s in stages if s is not None)


class TurnRecord(_Record):
    """One line of the transcript, with its timings (UTC) and the latency before it in milliseconds.

    A caller turn's ``breakdown`` splits how long it waited for its answer (None for agent turns, and
    for calls recorded before it was measured).
    """

    seq: int
    speaker: Speaker
    text: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    latency_ms: int | None
    interrupted: bool
    via: Via
    breakdown: TurnLatencyRecord | None = None


class TransitionRecord(_Record):
    """One step of the call's path through the statechart."""

    seq: int
    source: str
    event: str
    target: str
    at: dt.datetime


class ErrorRecord(_Record):
    """One error recorded during the call."""

    at: dt.datetime
    kind: str
    where: str
    message: str


class CallSummary(_Record):
    """One row of the call list: who, when, how it ended, where the chart is or stopped."""

    call_sid: str
    flow: str
    direction: Direction
    caller: str | None
    started_at: dt.datetime
    ended_at: dt.datetime | None
    duration_s: float | None
    outcome: str | None
    current_state: str | None
    final_state: str | None
    recording_path: str | None
    turn_count: int
    #: The worker that ran (or runs) the call: ``VOICEFSM_WORKER_NAME``; None before 0002 or unleased.
    worker: str | None = None


class CallRecord(CallSummary):
    """A whole call: the summary plus transcript, state path, slots and errors, each in order."""

    transcript: list[TurnRecord]
    path: list[TransitionRecord]
    slots: dict[str, Any]
    errors: list[ErrorRecord]
