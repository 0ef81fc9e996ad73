"""Scenario files: scripted conversations in YAML beside the flow, validated, run and reported.

``flows/booking.scenarios.yaml``::

    today: 2024-06-03            # optional: what "tomorrow" and "next Tuesday" mean
    flow: Booking                # optional: the class, when the flow file has several
    scenarios:
      - name: books next Tuesday at half past ten
        today: 2024-06-05          # optional: this scenario's own "today"
        caller: "+15550001234"     # optional: the caller's number (null: withheld)
        parameters: {name: Ada}    # optional: the call's custom parameters (a campaign's CSV row)
        steps:
          - agent: Which day           # wait until the agent has said this (or {re: "regex"})
          - say: next Tuesday          # when the agent next listens, say it
          - press: "1"                 # ... or press keys
          - silence                    # ... or say nothing until it re-prompts or moves on
          - barge_in: Friday           # talk over the agent's next prompt
          - tts_fails                  # the agent's next prompt fails to synthesize
          - stt_fails                  # the recognizer dies now
          - state: ask_time            # wait until the call is in this state
          - hangup                     # the caller hangs up
          - machine: machine_end_beep  # answering-machine detection answers now (Twilio's AnsweredBy)
          - step: {check: taken}       # from now on the step in state `check` (or method) returns "taken"
          - step: {check: {fail: calendar down}}      # ... fails with that error
          - step: {check: {delay: 12}}                # ... takes 12 s (on the virtual clock), then returns
          - step: {check: {delay: 3, result: taken}}  # ... both
        expect:
          outcome: completed
          final_state: booked
          path: [greet, ask_day, ask_time, ask_name, confirm, booked]
          slots: {day: 2024-06-04, time: "10:30"}
          said: ["Hi, this is Bright Smile Dental.", {re: "^Which day"}, ...]  # all, in order

Every field is checked when given and ignored when not; a step that never comes true fails the
scenario there, naming the step and showing the conversation so far.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from voicefsm.errors import VoiceFsmError
from voicefsm.flow.chart import VoiceFlow
from voicefsm.flow.kinds import StepStub
from voicefsm.flow.spec import FlowSpec
from voicefsm.runtime.flow_runtime import FlowResult
from voicefsm.testing.coverage import Coverage
from voicefsm.testing.line import MONDAY, FlowLine, slot_matches

BARE_STEPS = ("silence", "hangup", "tts_fails", "stt_fails")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Pattern(_Model):
    """A regular expression the agent's prompt must contain a match for."""

    re: str

    @model_validator(mode="after")
    def _compiles(self) -> Pattern:
        try:
            re.compile(self.re)
        except re.error as exc:
            raise ValueError(f"{self.re!r} is not a regular expression: {exc}") from exc
        return self


class StepOutcome(_Model):
    """How a stubbed step ends: after ``delay`` seconds, with ``result``, or failing with ``fail``."""

    result: Any = None
    fail: str | None = None
    delay: float = Field(0.0, ge=0)
    hang: bool = False

    @model_validator(mode="before")
    @classmethod
    def _bare_result(cls, data: Any) -> Any:
        if data is None or isinstance(data, str | int | float | bool):
            return {"result": data}
        return data

    def describe(self) -> str:
        """The outcome as a person reads it."""
        parts = [f"after {self.delay:g} s"] if self.delay else []
        if self.hang:
            parts.append("never returns")
        elif self.fail is not None:
            parts.append(f"fails: {self.fail}")
        else:
            parts.append(f"returns {self.result!r}")
        return " ".join(parts)

    def stub(self) -> StepStub:
        """The test kit's stub for this outcome."""
        return StepStub(result=self.result, error=self.fail, delay_s=self.delay, hang=self.hang)


class Step(_Model):
    """One thing that happens on the line; exactly one field is set."""

    agent: str | Pattern | None = Field(None, description="wait until the agent has said this")
    say: str | None = Field(None, description="when the agent next listens, the caller says this")
    press: str | None = Field(None, pattern=r"^[0-9*#]+$", description="when it listens, press these keys")
    silence: bool | None = Field(None, description="say nothing until it re-prompts or moves on")
    barge_in: str | None = Field(None, description="talk over the agent's next prompt")
    tts_fails: bool | None = Field(None, description="the agent's next prompt fails to synthesize")
    stt_fails: bool | None = Field(None, description="the recognizer dies now")
    state: str | None = Field(None, description="wait until the call is in this state")
    hangup: bool | None = Field(None, description="the caller hangs up")
    machine: str | None = Field(
        None,
        pattern=r"^[a-z_]{1,32}$",
        description="answering-machine detection answers now with this verdict (machine_end_beep...)",
    )
    step: dict[str, StepOutcome] | None = Field(
        None, description="stub a step (by Do state or method name) from now on: a result, a failure, a delay"
    )

    @model_validator(mode="before")
    @classmethod
    def _bare_word(cls, data: Any) -> Any:
        if isinstance(data, str):
            if data not in BARE_STEPS:
                raise ValueError(
                    f"{data!r} is not a step; a bare step is one of {', '.join(BARE_STEPS)}, "
                    "others take a value, e.g. 'say: next Tuesday'"
                )
            return {data: True}
        return data

    @field_validator("say", "barge_in", "press", mode="before")
    @classmethod
    def _yaml_scalars(cls, value: Any) -> Any:
        # YAML reads an unquoted yes/no as a boolean and 1 as a number; the caller meant the words.
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, int):
            return str(value)
        return value

    @model_validator(mode="after")
    def _one_thing(self) -> Step:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a step does exactly one thing; this one sets {', '.join(given) or 'nothing'}")
        return self

    @property
    def kind(self) -> str:
        """The name of the field that is set."""
        return next(name for name in type(self).model_fields if getattr(self, name) is not None)

    def describe(self) -> str:
        """The step as written."""
        value = getattr(self, self.kind)
        if value is True:
            return self.kind
        if isinstance(value, Pattern):
            return f"{self.kind}: /{value.re}/"
        if isinstance(value, dict):
            shown = ", ".join(f"{name} -> {outcome.describe()}" for name, outcome in value.items())
            return f"{self.kind}: {shown}"
        return f"{self.kind}: {value!r}"


class Expect(_Model):
    """What must hold when the call has ended."""

    outcome: str | None = None
    final_state: str | None = None
    path: list[str] | None = None
    slots: dict[str, Any] | None = None
    said: list[str | Pattern] | None = Field(None, description="the agent's prompts, in order (all of them)")


class Scenario(_Model):
    """One scripted call."""

    name: str
    today: dt.date | None = None
    caller: str | None = "+15550001234"
    parameters: dict[str, str] = Field(
        default_factory=dict, description="the call's custom parameters (a campaign's CSV row)"
    )
    steps: list[Step] = Field(default_factory=list)
    expect: Expect = Field(default_factory=lambda: Expect())


class ScenarioFile(_Model):
    """A YAML file of scenarios for one flow."""

    flow: str | None = Field(None, description="the flow class, when its file has several")
    today: dt.date | None = None
    scenarios: list[Scenario] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> ScenarioFile:
        names = [scenario.name for scenario in self.scenarios]
        doubles = sorted({name for name in names if names.count(name) > 1})
        if doubles:
            raise ValueError(f"scenario names must be unique; repeated: {', '.join(doubles)}")
        return self


class ScenarioFileError(VoiceFsmError):
    """A scenario file that cannot be read or does not match the schema."""

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        listed = "\n".join(f"  - {problem}" for problem in self.problems)
        return f"{self.path}: not a valid scenario file:\n{listed}"


class _Loader(yaml.SafeLoader):
    """YAML 1.2 integers: ``10:30`` stays the text "10:30" (not 630), ``0123`` stays "0123" (not 83).

    What a caller says or presses must reach the flow exactly as written.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:int"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
)


def scenarios_path_for(flow_file: Path) -> Path:
    """Where a flow's scenarios live: ``booking.py`` -> ``booking.scenarios.yaml``."""
    return flow_file.with_suffix(".scenarios.yaml")


def load_scenarios(path: Path) -> ScenarioFile:
    """Read and validate a scenario file; raises ScenarioFileError naming scenario and step."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # a SafeLoader
    except OSError as exc:
        raise ScenarioFileError(path, [f"cannot read it: {exc.strerror or exc}"]) from exc
    except yaml.YAMLError as exc:
        raise ScenarioFileError(path, [f"not YAML: {exc}"]) from exc
    try:
        return ScenarioFile.model_validate(data)
    except ValidationError as exc:
        raise ScenarioFileError(path, [_where(data, error) for error in exc.errors()]) from exc


def _where(data: Any, error: Any) -> str:
    parts: list[str] = []
    location = list(error["loc"])
    if location[:1] == ["scenarios"] and len(location) > 1 and isinstance(location[1], int):
        index = location[1]
        try:
            name = data["scenarios"][index]["name"]
            parts.append(f"scenario {name!r}")
        except (KeyError, IndexError, TypeError):
            parts.append(f"scenario #{index + 1}")
        location = location[2:]
        if location[:1] == ["steps"] and len(location) > 1 and isinstance(location[1], int):
            parts.append(f"step {location[1] + 1}")
            location = [item for item in location[2:] if not isinstance(item, int)][:1]
            if location and location[0] not in Step.model_fields:
                error = {"msg": f"no such step; a step is one of {', '.join(Step.model_fields)}"}
            elif location and location[0] in BARE_STEPS:
                error = {"msg": f"takes no value: write it alone, as '- {location[0]}'"}
    where = ", ".join([*parts, ".".join(str(item) for item in location)] if location else parts)
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


# -- running ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class ScenarioResult:
    """How one scenario went."""

    name: str
    passed: bool
    problems: list[str] = field(default_factory=list)
    failed_step: str | None = None
    path: list[str] = field(default_factory=list)
    transcript: list[tuple[str, str]] = field(default_factory=list)
    outcome: str | None = None
    simulated_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "passed": self.passed,
            "problems": self.problems,
            "failed_step": self.failed_step,
            "outcome": self.outcome,
            "path": self.path,
            "transcript": [{"speaker": s, "text": t} for s, t in self.transcript],
            "simulated_s": round(self.simulated_s, 3),
        }


async def run_scenario(
    flow_class: type[VoiceFlow],
    scenario: Scenario,
    *,
    today: dt.date | None = None,
    coverage: Coverage | None = None,
) -> ScenarioResult:
    """Run one scenario through the real runtime on a virtual clock."""
    result = ScenarioResult(scenario.name, passed=False)
    line = FlowLine(
        flow_class,
        caller=scenario.caller,
        today=scenario.today or today or MONDAY,
        parameters=scenario.parameters,
    )
    flow_result: FlowResult | None = None
    await line.__aenter__()  # not `async with`: its exit asserts on leaks, which are reported here
    try:
        for number, step in enumerate(scenario.steps, 1):
            result.failed_step = f"step {number} ({step.describe()})"
            await _perform(line, step)
        result.failed_step = "the end of the call"
        flow_result = await line.ended()
        result.failed_step = None
    except AssertionError as exc:
        result.problems.append(str(exc).split("\n", 1)[0])
    except Exception as exc:  # the runtime itself failed: a finding, not a crash of the whole run
        result.problems.append(f"the call failed: {type(exc).__name__}: {exc}")
    finally:
        await line.close()
    left = line.cancel_leftovers()
    if left:
        result.problems.append(f"tasks left behind by the call: {left}")
    result.path = line.path
    result.transcript = [(turn.speaker, turn.text) for turn in line.turns]
    result.simulated_s = line.clock.now()
    if flow_result is not None:
        result.outcome = flow_result.outcome
        result.problems += _check(scenario.expect, flow_result, line)
    if coverage is not None:
        coverage.record(line.transitions, line.turns)
    result.passed = not result.problems
    return result


async def _perform(line: FlowLine, step: Step) -> None:
    match step.kind:
        case "agent":
            assert step.agent is not None
            await line.heard(re.compile(step.agent.re) if isinstance(step.agent, Pattern) else step.agent)
        case "say":
            await line.answer(step.say or "")
        case "press":
            await line.keys(step.press or "")
        case "silence":
            await line.stay_silent()
        case "barge_in":
            await line.barge_in(step.barge_in or "")
        case "tts_fails":
            line.tts.fail_next()
        case "stt_fails":
            line.stt.fail()
        case "state":
            await line.until(lambda: line.state == step.state, f"the call to be in {step.state}")
        case "hangup":
            line.hang_up()
        case "machine":
            await line.until(lambda: line.state is not None, "the call to start")
            line.machine_answers(step.machine or "")
        case "step":
            for name, outcome in (step.step or {}).items():
                _known_step(line, name)
                line.stubs[name] = outcome.stub()


def _known_step(line: FlowLine, name: str) -> None:
    flow = line.flow if isinstance(line.flow, type) else type(line.flow)
    steps = {state.id: state for state in FlowSpec.of(flow).states if state.method is not None}
    if name in steps or any(state.method == name for state in steps.values()):
        return
    known = ", ".join(f"{sid} ({state.method})" for sid, state in steps.items()) or "none"
    raise AssertionError(f"{flow.__name__} has no step {name!r}; its steps (Do states) are {known}")


def _check(expect: Expect, result: FlowResult, line: FlowLine) -> list[str]:
    problems = []
    if expect.outcome is not None and result.outcome != expect.outcome:
        problems.append(f"outcome: expected {expect.outcome!r}, got {result.outcome!r}")
    if expect.final_state is not None and result.final_state != expect.final_state:
        problems.append(f"final state: expected {expect.final_state!r}, got {result.final_state!r}")
    if expect.path is not None and line.path != expect.path:
        problems.append(f"path: expected {' -> '.join(expect.path)}, got {' -> '.join(line.path)}")
    for name, wanted in (expect.slots or {}).items():
        if name not in result.slots:
            has = ", ".join(result.slots) or "no slots"
            problems.append(f"slot {name!r}: the flow has no such slot (it has {has})")
        elif not slot_matches(result.slots[name], wanted):
            problems.append(f"slot {name!r}: expected {wanted!r}, got {result.slots[name]!r}")
    if expect.said is not None:
        said = line.agent_said
        if len(said) != len(expect.said) or not all(
            _said_matches(want, text) for want, text in zip(expect.said, said, strict=False)
        ):
            problems.append(f"the agent said {said!r}, expected {[_shown(w) for w in expect.said]!r}")
    return problems


def _said_matches(want: str | Pattern, text: str) -> bool:
    if isinstance(want, Pattern):
        return re.search(want.re, text) is not None
    return want == text


def _shown(want: str | Pattern) -> str:
    return f"/{want.re}/" if isinstance(want, Pattern) else want


@dataclass(slots=True)
class ScenarioReport:
    """Every scenario of a file, and the coverage they reached together."""

    flow: str
    path: Path
    results: list[ScenarioResult]
    coverage: Coverage

    @property
    def passed(self) -> bool:
        """True when every scenario passed."""
        return all(result.passed for result in self.results)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: scenario results and the four coverage measures."""
        return {
            "flow": self.flow,
            "scenario_file": str(self.path),
            "passed": self.passed,
            "scenarios": [result.to_json() for result in self.results],
            **self.coverage.to_json(),
        }


async def run_scenario_file(
    flow_class: type[VoiceFlow], scenarios: ScenarioFile, path: Path
) -> ScenarioReport:
    """Run every scenario of ``scenarios`` against ``flow_class``, one call after another."""
    coverage = Coverage(FlowSpec.of(flow_class))
    results = [
        await run_scenario(flow_class, scenario, today=scenarios.today, coverage=coverage)
        for scenario in scenarios.scenarios
    ]
    return ScenarioReport(flow_class.__name__, path, results, coverage)
