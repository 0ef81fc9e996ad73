"""Flow coverage: which declared states, transitions, events and prompts a set of calls exercised.

"Declared" means written in the flow. The exits every VoiceFlow gets for free (hang-ups,
provider failures, errors in flow code, the ``hung_up`` and ``failed`` endings) are the base
class's, proven by ``voicefsm validate`` and exercised by ``voicefsm test --faults``; they are
left out of the totals so that 100% means every line the author wrote has run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from voicefsm.flow.kinds import FAILURE, TIMED_OUT
from voicefsm.flow.spec import FlowSpec
from voicefsm.runtime.flow_listener import Turn

Transition = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class Measure:
    """``covered`` out of ``total``, and what was not."""

    covered: int
    total: int
    uncovered: tuple[str, ...]

    @property
    def percent(self) -> float:
        """Covered share in percent (100 when nothing is declared)."""
        return 100.0 if self.total == 0 else 100.0 * self.covered / self.total

    def to_json(self) -> dict[str, Any]:
        """``{"covered", "total", "percent", "uncovered"}``."""
        return {
            "covered": self.covered,
            "total": self.total,
            "percent": round(self.percent, 1),
            "uncovered": list(self.uncovered),
        }


@dataclass(slots=True)
class Coverage:
    """Accumulates what calls to one flow did, against what its spec declares."""

    spec: FlowSpec
    states_entered: set[str] = field(default_factory=set)
    transitions_taken: set[Transition] = field(default_factory=set)
    prompts_spoken: set[tuple[str, str]] = field(default_factory=set)

    def record(self, transitions: list[Transition], turns: list[Turn]) -> None:
        """Add one call's transitions and turns."""
        for source, event, target in transitions:
            self.transitions_taken.add((source, event, target))
            self.states_entered.add(target)
        templates = self._templates()
        for turn in turns:
            if turn.speaker != "agent" or turn.state is None:
                continue
            for template in templates.get(turn.state, ()):
                if _template_regex(template).fullmatch(turn.text):
                    self.prompts_spoken.add((turn.state, template))

    # -- what is declared -------------------------------------------------------------------

    def _declared_states(self) -> list[str]:
        return [state.id for state in self.spec.states if not state.default]

    def _declared_transitions(self) -> list[Transition]:
        seen: dict[Transition, None] = {}
        for transition in self.spec.transitions:
            if transition.default:
                continue
            target = transition.target or transition.source
            for event in transition.events:
                seen[(transition.source, event, target)] = None
        return list(seen)

    def _templates(self) -> dict[str, list[str]]:
        templates: dict[str, list[str]] = {}
        for state in self.spec.states:
            if state.default:
                continue
            found = [state.prompt] if state.prompt else []
            if state.retries:  # with no retries, re-prompts are never spoken
                retried = [*(state.reprompts or []), *(state.no_input_prompts or [])]
                found += [text for text in retried if text]
            templates[state.id] = list(dict.fromkeys(found))
        return templates

    # -- measures -----------------------------------------------------------------------------

    @property
    def states(self) -> Measure:
        """Declared states entered."""
        declared = self._declared_states()
        missing = [state for state in declared if state not in self.states_entered]
        return Measure(len(declared) - len(missing), len(declared), tuple(missing))

    @property
    def transitions(self) -> Measure:
        """Declared transitions taken, as ``source -event-> target``."""
        declared = self._declared_transitions()
        missing = [t for t in declared if t not in self.transitions_taken]
        return Measure(len(declared) - len(missing), len(declared), tuple(_arrow(t) for t in missing))

    @property
    def events(self) -> Measure:
        """Declared (state, event) pairs handled: each event the flow handles in each state."""
        declared = list(dict.fromkeys((source, event) for source, event, _ in self._declared_transitions()))
        handled = {(source, event) for source, event, _ in self.transitions_taken}
        missing = [pair for pair in declared if pair not in handled]
        return Measure(len(declared) - len(missing), len(declared), tuple(f"{s}: {e}" for s, e in missing))

    @property
    def prompts(self) -> Measure:
        """Declared prompts (first prompts, re-prompts, no-input prompts) spoken at least once."""
        declared = [(state, text) for state, texts in self._templates().items() for text in texts]
        missing = [pair for pair in declared if pair not in self.prompts_spoken]
        return Measure(len(declared) - len(missing), len(declared), tuple(f"{s}: {t!r}" for s, t in missing))

    @property
    def steps(self) -> Measure:
        """Step outcomes seen: each result (or done), failure and timed_out of every Do state.

        The default exits count here: a step's failure is the flow's to test, whichever state it leads to.
        """
        declared = [
            (state.id, outcome)
            for state in self.spec.states
            if state.results is not None and not state.default
            for outcome in (*state.results, FAILURE, TIMED_OUT)
        ]
        handled = {(source, event) for source, event, _ in self.transitions_taken}
        missing = [pair for pair in declared if pair not in handled]
        return Measure(len(declared) - len(missing), len(declared), tuple(f"{s}: {e}" for s, e in missing))

    def to_json(self) -> dict[str, Any]:
        """The five measures by name."""
        return {
            "states": self.states.to_json(),
            "transitions": self.transitions.to_json(),
            "events": self.events.to_json(),
            "prompts": self.prompts.to_json(),
            "steps": self.steps.to_json(),
        }


def _arrow(transition: Transition) -> str:
    source, event, target = transition
    return f"{source} -{event}-> {target}"


_FIELD = re.compile(r"\{[^{}]*\}")


def _template_regex(template: str) -> re.Pattern[str]:
    parts = _FIELD.split(template)
    return re.compile(".+?".join(re.escape(part) for part in parts), re.DOTALL)
