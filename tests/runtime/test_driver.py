"""The one driver: run_call over an in-process far end, its playout clock, its lifecycle and teardown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from voicefsm.core.events import AudioIn, CallEvent, CallStarted, Disconnected, KeyPressed
from voicefsm.core.intents import PlaceMark, PlayAudio
from voicefsm.core.marks import MarkOutcome
from voicefsm.providers.scripted import ScriptedSpeechToText
from voicefsm.runtime.call import Call
from voicefsm.runtime.clock import Clock, LoopClock, ManualClock, VirtualClock
from voicefsm.runtime.driver import CallLimits, run_call
from voicefsm.runtime.session import CallHandler, CallSession
from voicefsm.transports.memory import MemoryFarEnd

ONE_SECOND = b"\xff" * 8000  # 8000 mu-law bytes play for one second
LIMITS = CallLimits(start_timeout_s=5, idle_timeout_s=None, handler_grace_s=1, close_timeout_s=1)


class Sessions:
    """Opens sessions for ``handler`` and notes what happened, in order."""

    def __init__(self, handler: CallHandler | None, clock: Clock | None = None, **call: object) -> None:
        self.handler = handler
        self.clock = clock or LoopClock()
        self.call_kwargs = call
        self.calls: list[Call] = []
        self.events: list[CallEvent] = []
        self.log: list[str] = []

    @contextlib.asynccontextmanager
    async def open(self, started: CallStarted) -> AsyncIterator[CallSession]:
        call = Call(call_sid=started.call_id, caller=started.caller, **self.call_kwargs)  # type: ignore[arg-type]
        call.subscribe(self.events.append)
        self.calls.append(call)
        self.log.append(f"open {started.call_id} from {started.caller}")
        try:
            yield CallSession(call, self.handler, self.clock)
        finally:
            self.log.append(f"close ({call.disconnect_reason})")


async def run(far_end: MemoryFarEnd, sessions: Sessions) -> str:
    async with asyncio.timeout(5):
        return await run_call(far_end, sessions.open, LIMITS)


def marker(at: list[float], clock: Clock, outcome: list[MarkOutcome]) -> Callable[[Call], object]:
    async def handler(call: Call) -> None:
        call.put_outbound(ONE_SECOND)
        call.put_outbound(ONE_SECOND[:4000])
        outcome.append(await call.play_mark("greet"))
        at.append(clock.now())
        call.request_disconnect("done")

    return handler


async def test_the_playout_confirms_a_mark_once_the_audio_before_it_has_played() -> None:
    clock = VirtualClock()
    at: list[float] = []
    outcome: list[MarkOutcome] = []
    far_end = MemoryFarEnd()
    far_end.start("CA1", "+15550001111")
    sessions = Sessions(marker(at, clock, outcome), clock)
    try:
        assert await run(far_end, sessions) == "done"
    finally:
        clock.close()
    assert (outcome, at) == ([MarkOutcome.PLAYED], [1.5])
    assert sessions.log == ["open CA1 from +15550001111", "close (done)"]
    assert far_end.closed_reason == "done"
    assert [type(item) for item in _drain(far_end)] == [PlayAudio, PlayAudio, PlaceMark]


async def test_on_a_manual_clock_the_audio_itself_moves_time() -> None:
    clock = ManualClock()
    at: list[float] = []
    outcome: list[MarkOutcome] = []
    far_end = MemoryFarEnd()
    far_end.start("CA2")
    assert await run(far_end, Sessions(marker(at, clock, outcome), clock)) == "done"
    assert (outcome, at, clock.now()) == ([MarkOutcome.PLAYED], [1.5], 1.5)


async def test_a_far_end_that_echoes_marks_is_not_second_guessed_by_the_playout() -> None:
    outcome: list[MarkOutcome] = []
    seen: list[object] = []
    far_end = MemoryFarEnd(echoes_marks=True)

    def phone(item: object) -> None:
        seen.append(item)
        if isinstance(item, PlaceMark):  # this phone reports playback at once, whatever the clock
            far_end.reach_mark(item.name)

    far_end.on_intent = phone
    far_end.start("CA3")
    clock = ManualClock()  # a playout would move this clock; an echoing far end leaves it alone
    assert await run(far_end, Sessions(marker([], clock, outcome), clock)) == "done"
    assert outcome == [MarkOutcome.PLAYED] and clock.now() == 0.0
    assert [type(item) for item in seen] == [PlayAudio, PlayAudio, PlaceMark]


async def test_keys_and_audio_from_the_far_end_reach_the_call() -> None:
    stt = ScriptedSpeechToText()
    far_end = MemoryFarEnd()
    heard = asyncio.Event()

    async def handler(call: Call) -> None:
        far_end.press("4#")
        far_end.play(b"\x7f" * 160)
        while stt.frames_received < 1 or KeyPressed("#") not in sessions.events:  # noqa: ASYNC110
            await asyncio.sleep(0)  # the receive pump and the recognizer run on this loop
        heard.set()
        await call.disconnected.wait()

    sessions = Sessions(handler, stt_factory=lambda: stt)
    far_end.start("CA4")
    task = asyncio.create_task(run(far_end, sessions))
    await asyncio.wait_for(heard.wait(), 5)
    far_end.hang_up("caller hung up")
    assert await task == "caller hung up"
    assert [event for event in sessions.events if isinstance(event, KeyPressed)] == [
        KeyPressed("4"),
        KeyPressed("#"),
    ]
    assert stt.stopped


async def test_a_hang_up_ends_the_call_once_then_the_far_end_then_the_session_closes() -> None:
    far_end = MemoryFarEnd()
    order: list[str] = []

    async def handler(call: Call) -> None:
        order.append("handler runs")
        await call.disconnected.wait()
        order.append(f"handler sees {call.disconnect_reason}")

    sessions = Sessions(handler)
    far_end.start("CA5")
    far_end.hang_up("caller hung up")
    assert await run(far_end, sessions) == "caller hung up"
    assert order == ["handler runs", "handler sees caller hung up"]
    assert [event for event in sessions.events if isinstance(event, Disconnected)] == [
        Disconnected("caller hung up")
    ]
    assert isinstance(sessions.events[0], CallStarted)
    assert far_end.closed_reason == "caller hung up" and sessions.log[-1] == "close (caller hung up)"
    far_end.press("1")  # a closed line takes nothing more
    assert [far_end.events.get_nowait() for _ in range(far_end.events.qsize())] == [None]  # the end mark


async def test_a_far_end_that_never_starts_opens_no_session() -> None:
    far_end = MemoryFarEnd()
    far_end.hang_up("gone before the start")
    sessions = Sessions(None)
    assert await run(far_end, sessions) == "no start"
    assert sessions.log == [] and far_end.closed_reason == "no start"


def _drain(far_end: MemoryFarEnd) -> list[object]:
    items = []
    while not far_end.intents.empty():
        items.append(far_end.intents.get_nowait())
    return items


class EchoingPhone:
    """A far end that plays in real time (it echoes marks) and notes which task sent each item.

    ``hold`` makes a send of that audio wait until it is set, as a full socket would.
    """

    echoes_marks = True

    def __init__(self) -> None:
        self.events: asyncio.Queue[object] = asyncio.Queue()
        self.sent: list[tuple[str, bytes]] = []
        self.sending = 0
        self.most_at_once = 0
        self.hold: dict[bytes, asyncio.Event] = {}

    async def receive(self) -> object:
        return await self.events.get()

    async def send(self, item: object) -> None:
        assert isinstance(item, PlayAudio)
        self.sending += 1
        self.most_at_once = max(self.most_at_once, self.sending)
        try:
            if item.ulaw in self.hold:
                await self.hold[item.ulaw].wait()
            task = asyncio.current_task()
            self.sent.append((task.get_name() if task else "?", item.ulaw))
        finally:
            self.sending -= 1

    async def close(self, reason: str) -> None:
        return None


async def sent_count(phone: EchoingPhone, count: int) -> None:
    # Polling: the pumps run on this loop and the phone has no event for "n items sent".
    while len(phone.sent) < count:  # noqa: ASYNC110
        await asyncio.sleep(0)


async def test_a_frames_echo_leaves_from_the_receive_pump_after_the_audio_queued_before_it() -> None:
    phone = EchoingPhone()
    prompt, echo = b"\x01" * 160, b"\x02" * 160

    async def handler(call: Call) -> None:
        call.put_outbound(prompt)
        await sent_count(phone, 1)  # the send pump sent the prompt
        call.inbound_sink = call.put_outbound  # the echo line
        phone.events.put_nowait(AudioIn(echo))
        await sent_count(phone, 2)
        call.request_disconnect("done")

    phone.events.put_nowait(CallStarted("CA9"))
    async with asyncio.timeout(5):
        assert await run_call(phone, Sessions(handler).open, LIMITS) == "done"  # type: ignore[arg-type]
    assert phone.sent == [("call-send", prompt), ("call-receive", echo)]


async def test_the_send_pump_waits_while_the_receive_pump_sends_so_the_order_holds() -> None:
    phone = EchoingPhone()
    echo, after = b"\x02" * 160, b"\x03" * 160
    phone.hold[echo] = asyncio.Event()

    async def handler(call: Call) -> None:
        call.inbound_sink = call.put_outbound
        phone.events.put_nowait(AudioIn(echo))
        while phone.sending == 0:  # noqa: ASYNC110 - the receive pump's send is now blocked
            await asyncio.sleep(0)
        call.put_outbound(after)  # wakes the send pump, which must not send past the blocked echo
        for _ in range(10):  # the woken send pump's turns: a send past the blocked echo would show now
            await asyncio.sleep(0)
        assert phone.sent == [] and phone.most_at_once == 1
        phone.hold[echo].set()
        await sent_count(phone, 2)
        call.request_disconnect("done")

    phone.events.put_nowait(CallStarted("CA10"))
    async with asyncio.timeout(5):
        assert await run_call(phone, Sessions(handler).open, LIMITS) == "done"  # type: ignore[arg-type]
    assert [audio for _, audio in phone.sent] == [echo, after]
    assert phone.most_at_once == 1


async def test_a_send_that_never_finishes_ends_the_call_as_a_lost_connection() -> None:
    phone = EchoingPhone()
    stuck = b"\x04" * 160
    phone.hold[stuck] = asyncio.Event()  # never set: the phone stopped reading

    async def handler(call: Call) -> None:
        call.put_outbound(stuck)
        await call.disconnected.wait()

    phone.events.put_nowait(CallStarted("CA11"))
    limits = CallLimits(idle_timeout_s=None, handler_grace_s=1, close_timeout_s=1, send_timeout_s=0.2)
    async with asyncio.timeout(5):
        reason = await run_call(phone, Sessions(handler).open, limits)  # type: ignore[arg-type]
    assert reason == "connection lost (the far end took no audio for 0.2 s)"
