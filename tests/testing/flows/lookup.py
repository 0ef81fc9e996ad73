"""A tiny flow with a backend step, for the scenario files' step stubs."""

from __future__ import annotations

from pydantic import BaseModel

from voicefsm.flow import Ask, Digits, Do, Hangup, Result, Say, VoiceFlow


class Order(BaseModel):
    number: str | None = None
    status: str | None = None


class Lookup(VoiceFlow):
    slots_model = Order
    greet = Say("Order status line.", initial=True)
    ask = Ask("Your four-digit order number?", slot="number", expect=Digits(4))
    find = Do("find_order", results=["found", "missing"], filler="One moment.", timeout_s=5)
    tell = Hangup("Order {number} is {status}. Goodbye!")
    nope = Hangup("I can't find order {number}. Goodbye!")
    sorry = Hangup("Sorry, {error}. Goodbye!")
    spoken = greet.to(ask)
    filled = ask.to(find)
    no_input = ask.to(nope)
    no_match = ask.to(nope)
    found = find.to(tell)
    missing = find.to(nope)
    failure = find.to(sorry)

    async def find_order(self) -> Result | str:
        if self.slots.number == "1234":
            return Result("found", status="shipped")
        if self.slots.number == "6666":
            raise RuntimeError("the order system is down")
        return "missing"
