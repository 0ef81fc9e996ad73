"""What the served resume tests share: a flow of two keypad questions, and Twilio's side of a call."""

from __future__ import annotations

import asyncio
import re

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

from voicefsm.flow import Ask, Choice, Hangup, Say, VoiceFlow
from voicefsm.telephony.twilio.client import TwilioStreamClient

SIZE_PROMPT = "Small or large? Press 1 for small, 2 for large."
CRUST_PROMPT = "Thin or thick crust? Press 1 for thin, 2 for thick."


class Order(BaseModel):
    size: str | None = None
    crust: str | None = None


class Pizza(VoiceFlow):
    """Two questions answered on the keypad, then a goodbye that repeats the order."""

    slots_model = Order
    greet = Say("Pizza line.", initial=True)
    ask_size = Ask(
        SIZE_PROMPT,
        slot="size",
        expect=Choice({"small": ["small"], "large": ["large"]}, keys={"1": "small", "2": "large"}),
        no_input_s=30.0,
    )
    ask_crust = Ask(
        CRUST_PROMPT,
        slot="crust",
        expect=Choice({"thin": ["thin"], "thick": ["thick"]}, keys={"1": "thin", "2": "thick"}),
        no_input_s=30.0,
    )
    done = Hangup("A {size} pizza with a {crust} crust. Goodbye!")
    give_up = Hangup("Sorry, goodbye.")

    spoken = greet.to(ask_size)
    filled = ask_size.to(ask_crust) | ask_crust.to(done)
    no_input = ask_size.to(give_up) | ask_crust.to(give_up)
    no_match = ask_size.to(give_up) | ask_crust.to(give_up)


async def ring(http: httpx.AsyncClient, call_sid: str) -> str:
    """Twilio asks the voice webhook (first, or after a stream ended); returns the TwiML."""
    answer = await http.post("/twilio/voice", data={"CallSid": call_sid, "From": "+15550001234"})
    assert answer.status_code == 200
    return answer.text


def stream_parameters(twiml: str) -> dict[str, str]:
    return dict(re.findall(r'<Parameter name="([^"]+)" value="([^"]*)"', twiml))


def marks(twilio: TwilioStreamClient) -> list[str]:
    """The labels of the prompts the caller has heard to the end, in order (``ask_size#3`` -> ask_size)."""
    return [name.split("#")[0] for name in twilio.played_marks]


async def heard(twilio: TwilioStreamClient, label: str, *, count: int = 1) -> None:
    await twilio.wait_until(lambda: marks(twilio).count(label) >= count, timeout_s=10)


async def idle(app: FastAPI) -> None:
    """Wait (bounded) until the server has no live call left: the lost stream's session has closed."""
    registry = app.state.voicefsm.registry
    async with asyncio.timeout(10):
        await registry.idle.wait()
