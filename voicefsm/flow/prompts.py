"""The fixed prompts of a flow: every text it can speak that does not depend on the call.

A state's templates come from its ``templates()`` method (``prompt``, ``reprompt 2``,
``no_input_prompt``...); those with no template field (no slot, no built-in such as
``{reason}``) are spoken the same on every call, so their audio can be made once, ahead of
time. The flow's default apology (said when flow code fails) is one of them too.

Templates that are not spoken (a transfer's ``number``, an SMS ``body`` or recipient) are left out.
The texts are given exactly as the runtime will speak them: rendered, whitespace folded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from voicefsm.flow.slots import render_template, template_fields

#: Template labels that are not said to the caller.
NOT_SPOKEN: frozenset[str] = frozenset({"number", "sms body", "sms to"})
#: The label of the flow-wide apology, said when flow code fails (it has no state of its own).
APOLOGY_LABEL = "apology"


@dataclass(frozen=True, slots=True)
class FixedPrompt:
    """One fixed prompt: the state that says it (``"*"`` for the flow-wide apology), which one, the text."""

    state: str
    label: str
    text: str


def _spoken_templates(state: Any) -> Iterable[tuple[str, str]]:
    templates = getattr(state, "templates", None)
    if templates is None:
        return ()
    found: dict[str, str] = templates()
    return ((label, text) for label, text in found.items() if label not in NOT_SPOKEN and text)


def _fixed_text(template: str) -> str | None:
    """The text ``template`` always renders to, or None when it has fields (or is malformed)."""
    try:
        if template_fields(template):
            return None
        text = render_template(template, {})
    except (ValueError, KeyError, IndexError):
        return None
    return text or None


def fixed_prompts(flow: type[Any]) -> list[FixedPrompt]:
    """Every fixed prompt of ``flow`` (a VoiceFlow class), in state order (a text may appear twice)."""
    prompts: list[FixedPrompt] = []
    for state in flow.states:
        for label, template in _spoken_templates(state):
            text = _fixed_text(template)
            if text is not None:
                prompts.append(FixedPrompt(state.id, label, text))
    # The runtime also says the apology as written (unrendered) when flow code fails outside a state.
    apology = getattr(flow, "apology", None)
    if isinstance(apology, str) and _fixed_text(apology) is not None:
        listed = {prompt.text for prompt in prompts}
        for text in dict.fromkeys((render_template(apology, {}), apology)):
            if text not in listed:
                prompts.append(FixedPrompt("*", APOLOGY_LABEL, text))
    return prompts


def fixed_texts(flow: type[Any]) -> list[str]:
    """The distinct texts of :func:`fixed_prompts`, in order."""
    return list(dict.fromkeys(prompt.text for prompt in fixed_prompts(flow)))


def next_prompt(state: Any, event: str, values: Mapping[str, object]) -> str | None:
    """What the flow will say first if ``event`` is sent in ``state`` now, when that is already certain.

    Certain means: exactly one transition of ``state`` takes ``event``, it has no guard, its target
    speaks a prompt on entry, and every field of that prompt has a value in ``values`` (the slots and
    built-ins, as the runtime renders them). Otherwise None: nothing is guessed. The text is exactly
    what the runtime would render from ``values``; flow code that changes the slots on the way makes
    it differ, which a :class:`~voicefsm.providers.prompt_cache.Prefetcher` notices by the text.
    """
    transitions = [
        transition
        for transition in getattr(state, "transitions", ())
        if not transition.initial and any(_event_name(str(name)) == event for name in transition.events)
    ]
    if len(transitions) != 1:
        return None
    (transition,) = transitions
    if any(not spec.is_convention for spec in transition.cond):
        return None
    template = getattr(transition.target, "prompt", None)
    if not isinstance(template, str) or not template:
        return None
    try:
        if any(values.get(name) in (None, "") for name in template_fields(template)):
            return None
        return render_template(template, values) or None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def _event_name(name: str) -> str:
    return "error.execution" if name == "error_execution" else name
