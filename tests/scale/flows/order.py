"""A two-question keypad flow for the multi-worker tests: short prompts, answers by DTMF only."""

from __future__ import annotations

from pydantic import BaseModel

from voicefsm.flow import Ask, Choice, Hangup, Say, VoiceFlow


class Order(BaseModel):
    size: str | None = None
    crust: str | None = None


class PizzaOrder(VoiceFlow):
    """Size, then crust, on the keypad; the goodbye repeats the order."""

    slots_model = Order
    uses_stt = False
    greet = Say("Hi.", initial=True)
    ask_size = Ask(
        "Size? 1 or 2.",
        slot="size",
        expect=Choice({"small": ["small"], "large": ["large"]}, keys={"1": "small", "2": "large"}),
        no_input_s=30.0,
    )
    ask_crust = Ask(
        "Crust? 1 or 2.",
        slot="crust",
        expect=Choice({"thin": ["thin"], "thick": ["thick"]}, keys={"1": "thin", "2": "thick"}),
        no_input_s=30.0,
    )
    done = Hangup("{size}, {crust}. Bye.")
    give_up = Hangup("Bye.")

    spoken = greet.to(ask_size)
    filled = ask_size.to(ask_crust) | ask_crust.to(done)
    no_input = ask_size.to(give_up) | ask_crust.to(give_up)
    no_match = ask_size.to(give_up) | ask_crust.to(give_up)
