"""What a running flow tells the rest of voicefsm: transitions, turns, slots and errors as they
happen (:class:`FlowListener`), and how the call ended (:class:`FlowResult`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from voicefsm.flow.chart import Step, VoiceFlow
from voicefsm.flow.kinds import DISCONNECTED, outcome_of

Speaker = Literal["agent", "caller"]
Via = Literal["speech", "dtmf", "text"]


@dataclass(frozen=True, slots=True)
class Turn:
    """One utterance on the line. Times are seconds since the flow started (on the runtime's clock);
    ``latency_s`` is the silence before an agent turn, after the caller's last words or keys."""

    speaker: Speaker
    text: str
    start_s: float
    end_s: float
    via: Via = "speech"
    interrupted: bool = False
    state: str | None = None
    latency_s: float | None = None


@dataclass(frozen=True, slots=True)
class TurnLatency:
    """How long the caller waited for an answer to one of their turns, split by stage.

    Times are seconds since the flow started, on the runtime's clock (virtual in tests):

    ``speech_end_s`` the caller stopped speaking (their last interim words) or pressed the last key;
    ``committed_s`` the transcript (or the keys) was final; ``parsed_s`` the state had made sense of
    it and reacted (sent an event or spoke); ``transitioned_s`` the chart had moved (the same as
    ``parsed_s`` when the state answered with a re-prompt); ``first_audio_s`` the first audio frame
    of the answer went to the caller (None: the call ended, or the caller spoke again, before it).
    ``tts_first_byte_s`` is how long the answer's synthesis took to its first audio, ``source``
    where that audio came from (``memory``/``disk``: the prompt cache; ``provider``), and
    ``prefetched`` whether its synthesis had started ahead of need.
    """

    state: str | None
    via: Via
    speech_end_s: float
    committed_s: float
    parsed_s: float | None = None
    transitioned_s: float | None = None
    first_audio_s: float | None = None
    tts_first_byte_s: float | None = None
    source: str | None = None
    prefetched: bool = False

    @property
    def stages(self) -> dict[str, float | None]:
        """Each stage's duration in seconds (None when it did not happen), in order."""

        def between(start: float | None, end: float | None) -> float | None:
            return None if start is None or end is None else max(0.0, end - start)

        return {
            "commit": between(self.speech_end_s, self.committed_s),
            "parse": between(self.committed_s, self.parsed_s),
            "transition": between(self.parsed_s, self.transitioned_s),
            "first_audio": between(self.transitioned_s, self.first_audio_s),
        }

    @property
    def total_s(self) -> float | None:
        """From the end of the caller's speech (or last key) to the first audio of the answer."""
        return None if self.first_audio_s is None else max(0.0, self.first_audio_s - self.speech_end_s)


class FlowListener:
    """Hooks for records, live views and tests; override what you need. Called on the loop, never awaited.

    A listener that raises is logged and otherwise ignored: it never ends a call.
    """

    def on_transition(self, source: str, event: str, target: str) -> None:
        """The chart moved (``source == target``: a re-entry); first call: ``("", "start", first)``."""

    def on_turn(self, turn: Turn) -> None:
        """An utterance ended: an agent prompt (played or interrupted) or the caller's speech or keys."""

    def on_turn_latency(self, latency: TurnLatency) -> None:
        """A caller turn was answered (its answer's first audio went out), or went unanswered:
        how long each stage took. Comes after that caller turn's :meth:`on_turn`, before the next one's."""

    def on_listen(self, state: str) -> None:
        """The runtime starts listening in ``state`` (its prompt has played or was interrupted)."""

    def on_slot(self, name: str, value: object) -> None:
        """A slot was filled."""

    def on_error(self, kind: str, message: str, error: BaseException | None = None) -> None:
        """Something failed: ``kind`` is tts, stt, flow, action, step or runtime."""

    def on_step(self, state: str, outcome: str, detail: str = "") -> None:
        """A backend step (a Do state) ended with ``outcome`` (done, a result name, failure, timed_out,
        or ``cancelled``/``finished`` after a hang-up); ``detail`` is the error text, if any."""

    def on_limit(self, limit: str, detail: str) -> None:
        """A call limit was reached (``max_duration_s``, ``max_state_entries``, ``max_same_state``)."""


@dataclass(frozen=True, slots=True)
class FlowResult:
    """How a call's flow ended."""

    flow: str
    final_state: str | None
    outcome: str
    slots: dict[str, Any]
    ended_by: str | None
    path: tuple[Step, ...]

    @classmethod
    def of(cls, flow: VoiceFlow, *, aborted: bool, ended_by: str | None) -> FlowResult:
        """The result of ``flow`` as it stands: ``aborted`` when the runtime had to give up on it.

        The outcome is the final state's (``completed``, ``transferred``, ``error``...), ``hung_up``
        when the caller's hang-up ended it, ``error`` when it was aborted, ``incomplete`` otherwise.
        """
        terminated = flow.is_terminated
        state = flow.current if terminated else None
        if aborted and not terminated:
            outcome = "error"
        elif state is None:
            outcome = "incomplete"
        elif flow.steps and flow.steps[-1].event == DISCONNECTED:
            outcome = "hung_up"
        else:
            outcome = outcome_of(state)
        return cls(
            flow=type(flow).__name__,
            final_state=state.id if state is not None else None,
            outcome=outcome,
            slots=flow.slots.model_dump(exclude=set(type(flow.slots).model_computed_fields)),
            ended_by=ended_by,
            path=tuple(flow.steps),
        )
