"""``FlowSpec``: a flow class as data (states, prompts, expectations, timers, transitions, slots).

The spec is what tools read instead of the Python class: ``voicefsm validate --json``, the
diagram overlay, coverage and generated tests. ``FlowSpec.of(Booking).model_dump_json()``
exports it; ``FlowSpec.model_json_schema()`` describes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from voicefsm.flow.chart import VoiceFlow
from voicefsm.flow.checks import edges_of, normalize_event
from voicefsm.flow.kinds import kind_for

#: The built-in kinds; a kind of one's own has its own name.
BUILTIN_KINDS = ("say", "ask", "do", "hangup", "transfer", "send_sms", "echo", "state", "final")
StateKind = str


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExpectationSpec(_Spec):
    """What an Ask accepts: ``kind`` plus the expectation's parameters, and a description in words."""

    kind: str
    describe: str
    params: dict[str, Any] = Field(default_factory=dict)
    keypad_max_digits: int = 0
    keypad_terminator: str | None = None


class StateSpec(_Spec):
    """One state. Fields that do not apply to its kind are None."""

    id: str
    kind: StateKind
    initial: bool = False
    final: bool = False
    default: bool = Field(False, description="added by VoiceFlow (hung_up, failed), not written in the flow")
    line: int | None = None
    prompt: str | None = None
    barge_in: bool | None = None
    slot: str | None = None
    expect: ExpectationSpec | None = None
    no_input_s: float | None = None
    retries: int | None = None
    reprompts: list[str] | None = None
    no_input_prompts: list[str] | None = None
    keypad: bool | None = None
    outcome: str | None = None
    transfer_to: str | None = None
    sms_body: str | None = None
    sms_to: str | None = None
    max_s: float | None = None
    method: str | None = Field(None, description="a Do step's flow method")
    results: list[str] | None = Field(
        None, description="a Do step's outcome events besides failure/timed_out"
    )
    result_slot: str | None = Field(None, description="the slot a Do step stores a plain return value in")
    timeout_s: float | None = None
    filler: str | None = None
    filler_after_s: float | None = None
    filler_min_s: float | None = None
    on_hangup: str | None = None
    finish_s: float | None = None
    receives: list[str] = Field(default_factory=list, description="events this state can be sent")
    extra: dict[str, Any] = Field(
        default_factory=dict, description="fields of a kind defined outside voicefsm, by name"
    )


class TransitionSpec(_Spec):
    """One transition: taken on any of ``events`` (none: at once) when every guard holds."""

    source: str
    target: str | None
    events: list[str]
    guards: list[str] = Field(default_factory=list)
    default: bool = Field(False, description="added by VoiceFlow, not written in the flow")


class FlowSpec(_Spec):
    """A whole flow, as data."""

    name: str
    doc: str = ""
    path: str
    line: int
    initial: str
    uses_stt: bool
    slots_model: str
    slots_schema: dict[str, Any]
    states: list[StateSpec]
    transitions: list[TransitionSpec]
    events: list[str]
    limits: dict[str, int | float | None] = Field(
        default_factory=dict,
        description="call limits: max_duration_s, max_state_entries, max_same_state (None: no limit)",
    )

    @classmethod
    def of(cls, flow: type[VoiceFlow]) -> FlowSpec:
        """Extract the spec of a flow class."""
        path, line = flow._voice_source
        initial = flow.initial_state
        return cls(
            name=flow.__name__,
            doc=(flow.__doc__ or "").strip(),
            path=_display_path(path),
            line=line,
            initial=initial.id if initial is not None else "",
            uses_stt=bool(flow.uses_stt),
            slots_model=flow.slots_model.__name__,
            slots_schema=flow.slots_model.model_json_schema(),
            states=[_state_spec(flow, state) for state in flow.states],
            transitions=[
                TransitionSpec(
                    source=edge.source.id,
                    target=edge.target.id if edge.target is not None else None,
                    events=list(edge.events),
                    guards=list(edge.guards),
                    default=edge.default,
                )
                for edge in edges_of(flow)
            ],
            events=sorted({normalize_event(event.id) for event in flow._events}),
            limits={
                name: getattr(flow, name, None)
                for name in ("max_duration_s", "max_state_entries", "max_same_state")
            },
        )

    def state(self, state_id: str) -> StateSpec:
        """The state called ``state_id``; KeyError names the states there are."""
        for state in self.states:
            if state.id == state_id:
                return state
        raise KeyError(
            f"{self.name} has no state {state_id!r}; it has {', '.join(s.id for s in self.states)}"
        )


def _display_path(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def _state_spec(flow: type[VoiceFlow], state: Any) -> StateSpec:
    kind = kind_for(state)
    fields: dict[str, Any] = {
        "id": state.id,
        "kind": kind.kind,
        "initial": bool(state.initial),
        "final": bool(state.final),
        "default": state.id in flow._default_states,
        "receives": list(kind.events_received()),
    }
    extra: dict[str, Any] = {}
    for name, value in kind.spec_fields().items():
        if name in _FIXED:
            continue
        if name in StateSpec.model_fields:
            fields[name] = ExpectationSpec(**value) if name == "expect" and value is not None else value
        else:
            extra[name] = value
    if extra:
        fields["extra"] = extra
    return StateSpec(**fields)


_FIXED = frozenset({"id", "kind", "initial", "final", "default", "receives", "extra"})
