"""Where is my order? The caller gives a six-digit order number; the shop's order API says where it is.

The ``look_up`` step asks the order API (``GET /orders/<number>``, JSON) over HTTP. A known
order is read out; an unknown number can be tried again; an API that fails or is too slow is
apologised for. Point the flow at your shop with ``ORDER_API_URL`` (default
``http://127.0.0.1:8700``). Tests and ``voicefsm test`` use a fake API in memory
(:func:`demo_shop`), with two orders: 412241 (shipped) and 234567 (being packed); it answers
503 for order 503503 and never answers for 777777.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os

import httpx
from pydantic import BaseModel

from voicefsm.flow import Ask, Digits, Do, Hangup, Result, Say, VoiceFlow, YesNo, resource

#: Orders the fake API knows, as the real one would answer them.
DEMO_ORDERS: dict[str, dict[str, str]] = {
    "412241": {"number": "412241", "status": "shipped", "eta": "2024-06-05"},
    "234567": {"number": "234567", "status": "being packed", "eta": "2024-06-07"},
}


class OrderSlots(BaseModel):
    """What the call finds out."""

    number: str | None = None
    status: str | None = None
    eta: dt.date | None = None


#: Order numbers the fake API misbehaves on, as a real one sometimes does.
BROKEN_ORDER = "503503"  # answers 503 Service Unavailable
SLOW_ORDER = "777777"  # never answers (the step times out)


async def answer_from_demo_orders(request: httpx.Request) -> httpx.Response:
    """The fake order API: ``GET /orders/<number>`` answered from :data:`DEMO_ORDERS`."""
    number = request.url.path.rsplit("/", 1)[-1]
    if request.method != "GET" or not request.url.path.startswith("/orders/"):
        return httpx.Response(404, json={"detail": "not found"})
    if number == BROKEN_ORDER:
        return httpx.Response(503, json={"detail": "order system unavailable"})
    if number == SLOW_ORDER:
        await asyncio.Event().wait()  # cancelled by the step's timeout
    order = DEMO_ORDERS.get(number)
    if order is None:
        return httpx.Response(404, json={"detail": f"no order {number}"})
    return httpx.Response(200, json=order)


def demo_shop() -> httpx.AsyncClient:
    """An HTTP client whose requests never leave the process (httpx.MockTransport)."""
    return httpx.AsyncClient(
        base_url="http://orders.invalid", transport=httpx.MockTransport(answer_from_demo_orders)
    )


@resource(fake=demo_shop)
def shop() -> httpx.AsyncClient:
    """The shop's order API: one HTTP client (a connection pool) for every call, closed on shutdown."""
    return httpx.AsyncClient(base_url=os.environ.get("ORDER_API_URL", "http://127.0.0.1:8700"), timeout=5.0)


class OrderStatus(VoiceFlow):
    """Tell a caller where their order is."""

    slots_model = OrderSlots
    resources = (shop,)

    greet = Say("Hi, this is Parcel Point.", initial=True)
    ask_number = Ask(
        "What's your six-digit order number? You can say it or type it.",
        slot="number",
        expect=Digits(min_len=6, max_len=6),
        reprompt="Sorry, {reason}. What's your six-digit order number?",
    )
    look_up = Do(
        "find_order",
        results=("found", "unknown"),
        filler="One moment while I look that up.",
        timeout_s=6.0,
    )
    tell = Hangup("{order_summary} Thanks for calling Parcel Point. Goodbye!", outcome="found")
    try_again = Ask(
        "I couldn't find order {number}. Would you like to try another number?",
        expect=YesNo(),
        reprompt="Sorry, {reason}. Would you like to try another order number? Please say yes or no.",
    )
    unavailable = Hangup(
        "Sorry, I can't reach our order system right now. Please call again later. Goodbye!",
        outcome="unavailable",
    )
    goodbye = Hangup("Thanks for calling Parcel Point. Goodbye!", outcome="not_found")
    give_up = Hangup("Sorry, I couldn't get that. Please call again later.", outcome="gave_up")

    spoken = greet.to(ask_number)
    filled = ask_number.to(look_up) | try_again.to(ask_number, cond="yes") | try_again.to(goodbye)
    found = look_up.to(tell)
    unknown = look_up.to(try_again)
    failure = look_up.to(unavailable)
    timed_out = look_up.to(unavailable)
    no_input = ask_number.to(give_up) | try_again.to(give_up)
    no_match = ask_number.to(give_up) | try_again.to(give_up)

    @property
    def order_summary(self) -> str:
        """What the caller hears about a found order."""
        day = self.slots.eta
        eta = f", and should be with you on {day:%A} {day.day} {day:%B}" if day else ""
        return f"Order {self.slots.number} is {self.slots.status}{eta}."

    async def find_order(self) -> Result | str:
        """Step: ask the order API. 404 means unknown; other errors fail the step (and are apologised for)."""
        client: httpx.AsyncClient = self.resources.shop
        reply = await client.get(f"/orders/{self.slots.number}")
        if reply.status_code == 404:
            return "unknown"
        reply.raise_for_status()
        order = reply.json()
        eta = dt.date.fromisoformat(order["eta"]) if order.get("eta") else None
        return Result("found", status=str(order["status"]), eta=eta)
