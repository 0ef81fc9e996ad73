"""Prompts may name a flow property or a method without arguments; validate checks those names."""

from __future__ import annotations

import functools

import pytest
from pydantic import BaseModel

from voicefsm.flow import FlowDefinitionError, Hangup, Say, VoiceFlow
from voicefsm.flow.slots import (
    ComputedValueError,
    computed_names,
    computed_problem,
    render_template,
    template_values,
)
from voicefsm.testing import FlowLine


class Cart(BaseModel):
    items: int = 3
    total_cents: int = 1250


class Receipt(VoiceFlow):
    slots_model = Cart

    greet = Say("You have {items} items; {total}. {closing_time}", initial=True)
    bye = Hangup("{farewell}")
    spoken = greet.to(bye)

    @property
    def total(self) -> str:
        return f"the total is {self.slots.total_cents // 100} euros {self.slots.total_cents % 100:02d}"

    def closing_time(self) -> str:
        return "We close at six."

    @functools.cached_property
    def farewell(self) -> str:
        return f"Goodbye, {self.caller or 'caller'}!"

    def on_enter_bye(self) -> None:
        """A callback: never something a prompt may run."""

    def with_argument(self, name: str) -> str:
        return name

    async def fetch(self) -> str:
        return "never awaited by a prompt"


async def test_computed_values_are_spoken() -> None:
    async with FlowLine(Receipt, caller="+15550001234") as line:
        await line.ended()
    assert line.agent_said == [
        "You have 3 items; the total is 12 euros 50. We close at six.",
        "Goodbye, +15550001234!",
    ]


def test_the_names_a_template_may_use_exclude_callbacks_methods_with_arguments_and_async_ones() -> None:
    assert computed_names(Receipt) == ("total", "closing_time", "farewell")
    assert computed_problem(Receipt, "total") is None
    message, fix = computed_problem(Receipt, "fetch") or ("", "")
    assert message == "is an async method, which a prompt cannot wait for" and "Do state with slot=" in fix
    assert computed_problem(Receipt, "with_argument") == (
        "is a method that needs arguments",
        "give with_argument's arguments defaults, or make it a property",
    )
    assert computed_problem(Receipt, "no_such_thing") is None


def test_a_misspelt_property_is_named_with_a_suggestion() -> None:
    with pytest.raises(FlowDefinitionError) as caught:

        class Typo(VoiceFlow):
            greet = Say("Your total: {totl}.", initial=True)
            bye = Hangup("Bye.")
            spoken = greet.to(bye)

            @property
            def total(self) -> str:
                return "12 euros"

    message = str(caught.value)
    assert "names {totl}, which is neither a slot of NoSlots (none) nor a built-in" in message
    assert "nor a property of the flow (total)" in message
    assert message.endswith("Fix: did you mean {total}?")


def test_an_async_method_in_a_prompt_is_refused_with_the_fix() -> None:
    with pytest.raises(FlowDefinitionError, match=r"names \{lookup\}, which is an async method") as caught:

        class Awaits(VoiceFlow):
            greet = Say("Status: {lookup}.", initial=True)
            bye = Hangup("Bye.")
            spoken = greet.to(bye)

            async def lookup(self) -> str:
                return "fine"

    assert "run it in a Do state with slot=" in str(caught.value)


def test_slots_win_over_a_property_and_a_raising_property_is_a_value_error() -> None:
    class Shadow(VoiceFlow):
        slots_model = Cart
        greet = Say("{items} {broken}", initial=True)
        bye = Hangup("Bye.")
        spoken = greet.to(bye)

        @property
        def items(self) -> int:
            return 99

        @property
        def broken(self) -> str:
            raise LookupError("no such price")

    flow = Shadow()
    values = template_values(flow, reason="")
    assert values["items"] == 3
    with pytest.raises(ComputedValueError, match=r"computing \{broken\} failed: LookupError: no such price"):
        render_template("{broken}", values)
    with pytest.raises(KeyError):
        values["unknown"]
