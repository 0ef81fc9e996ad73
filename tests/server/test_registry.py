"""The call registry admits a neutral CallStarted against the single-use token the voice webhook minted."""

from __future__ import annotations

import pytest

from voicefsm.core.events import CallStarted
from voicefsm.runtime.call import Call
from voicefsm.server.registry import Admission, CallRegistry, StreamRejected


async def test_a_start_with_its_token_is_admitted_once_with_the_webhook_caller() -> None:
    registry = CallRegistry(require_token=True)
    token = await registry.issue_token("CA1", "+15550001111")
    assert await registry.issue_token("CA1", "+15550001111") == token  # a retried webhook gets the same one
    started = CallStarted("CA1", "+1999", {"token": token})
    assert await registry.admit(started) == Admission("CA1", "+15550001111")
    with pytest.raises(StreamRejected, match="unknown, used or expired token"):
        await registry.admit(started)


async def test_a_start_without_a_token_is_refused_unless_tokens_are_optional() -> None:
    with pytest.raises(StreamRejected, match="carries no token"):
        await CallRegistry(require_token=True).admit(CallStarted("CA2"))
    assert await CallRegistry(require_token=False).admit(CallStarted("CA2", "+1555")) == Admission(
        "CA2", "+1555"
    )


async def test_a_second_stream_for_a_live_call_is_refused() -> None:
    registry = CallRegistry(require_token=False)
    call = Call(call_sid="CA3")
    registry.add(call)
    assert not registry.idle.is_set()
    with pytest.raises(StreamRejected, match="already running"):
        await registry.admit(CallStarted("CA3"))
    registry.remove(call)
    assert registry.idle.is_set() and not registry.active
