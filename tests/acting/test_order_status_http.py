"""flows/order_status.py against a real HTTP order API on loopback (tests/fakes/order_api.py), not a mock."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from voicefsm.flow import load_flow
from voicefsm.testing import FlowLine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
from order_api import OrderApi, client_for, order_api

OrderStatus = load_flow("flows/order_status.py")


@pytest.fixture
async def api() -> AsyncIterator[OrderApi]:
    async with order_api() as running:
        yield running


async def call(api: OrderApi, *answers: str) -> FlowLine:
    """One call to the order line, whose `shop` resource is an HTTP client of the loopback API."""
    async with client_for(api) as shop, FlowLine(OrderStatus, resources={"shop": shop}) as line:
        for answer in answers:
            await line.answer(answer)
        await line.ended()
        api.release()  # a held request answers now (to nobody), so the server leaves no task behind
        await asyncio.wait_for(api.idle(), 5.0)
    return line


async def test_a_known_order_is_read_out_from_the_api(api: OrderApi) -> None:
    line = await call(api, "one two three four five six")
    line.assert_outcome("found")
    line.assert_said(
        "Order 123456 is shipped, and should be with you on Wednesday 5 June. "
        "Thanks for calling Parcel Point. Goodbye!"
    )
    line.assert_path("greet", "ask_number", "look_up", "tell")
    assert api.requests == ["/orders/123456"]


async def test_a_404_is_an_unknown_order_that_can_be_tried_again(api: OrderApi) -> None:
    line = await call(api, "999999", "yes", "345678")
    line.assert_said("I couldn't find order 999999. Would you like to try another number?")
    line.assert_said("Order 345678 is out for delivery")
    line.assert_path("greet", "ask_number", "look_up", "try_again", "ask_number", "look_up", "tell")
    assert api.requests == ["/orders/999999", "/orders/345678"]


async def test_a_failing_api_is_apologised_for(api: OrderApi) -> None:
    api.fail["123456"] = 503
    line = await call(api, "123456")
    line.assert_outcome("unavailable")
    line.assert_said("Sorry, I can't reach our order system right now.")
    assert line.transitions[-1] == ("look_up", "failure", "unavailable")


async def test_an_api_that_does_not_answer_times_out_after_the_filler(api: OrderApi) -> None:
    api.hold.add("123456")
    line = await call(api, "123456")
    line.assert_outcome("unavailable")
    line.assert_said("One moment while I look that up.")
    assert line.transitions[-1] == ("look_up", "timed_out", "unavailable")
    assert api.requests == ["/orders/123456"]  # it was asked; it never answered


async def test_an_api_that_is_not_there_fails_the_step() -> None:
    async with order_api() as gone:
        address = gone.base_url
    async with (
        httpx.AsyncClient(base_url=address, timeout=5.0) as shop,
        FlowLine(OrderStatus, resources={"shop": shop}) as line,
    ):
        await line.answer("123456")
        await line.ended()
    assert line.transitions[-1] == ("look_up", "failure", "unavailable")
