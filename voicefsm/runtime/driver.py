"""The one driver of a call: :func:`run_call` runs a call over any far end, from its start to its last task.

The served Twilio call, the browser phone (which speaks Twilio's protocol), ``voicefsm chat``,
the test line and the bridge differ only in the far end they hand it and the session they
open. :func:`run_call` owns every task of the call: the receive pump, the send pump, the
hang-up watcher, the recognizer and the session's handler (the flow). Whatever ends the call
(the far end hanging up, a lost connection, an idle line, a hang-up request, the handler
returning, server shutdown), the same teardown runs once: the call is marked disconnected
exactly once, the handler gets a moment to finish, the recognizer is stopped, every task is
cancelled and awaited, the far end is closed, and then the session is closed.

A far end that does not echo marks (the terminal, the in-process line) gets them from
:class:`Playout`: a mark is confirmed once the audio queued before it would have finished
playing, on the session's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from voicefsm.core.audio import SAMPLE_RATE_HZ
from voicefsm.core.events import AudioIn, CallStarted, FarEndHungUp, KeyPressed, MarkReached
from voicefsm.core.intents import ClearBuffer, OutboundItem, PlaceMark, PlayAudio
from voicefsm.observability.context import bind_call
from voicefsm.observability.tracing import span
from voicefsm.runtime.call import Call
from voicefsm.runtime.clock import Clock, ManualClock
from voicefsm.runtime.session import CallHandler, CallSession, SessionOpener
from voicefsm.transports.base import FarEnd, TransportClosed

__all__ = ["CallHandler", "CallLimits", "Playout", "run_call", "wait_for_start"]

log = logging.getLogger(__name__)

#: The send pump lets the loop run after this many sends in a row (see _send_pump).
_YIELD_EVERY_SENDS = 4


@dataclass(frozen=True, slots=True)
class CallLimits:
    """Deadlines of one call's driver, in real seconds (``idle_timeout_s=None``: never idle out)."""

    start_timeout_s: float = 10.0
    idle_timeout_s: float | None = 20.0
    #: How long the flow may take to wind down after the call ends; longer than a step's longest
    #: ``finish_s`` (flow/kinds/do.py MAX_FINISH_S), so a write that must finish after a hang-up can.
    handler_grace_s: float = 10.0
    close_timeout_s: float = 5.0
    #: A far end that takes longer than this to accept one frame has stopped reading (a full TCP
    #: window): the call ends rather than queue audio for it without bound. None: wait for ever.
    send_timeout_s: float | None = 10.0
    #: On a far end that plays in real time (Twilio), agent audio is sent at most this far ahead
    #: of playback, so a synthesizer 10x faster than speech never fills the phone's buffer.
    send_ahead_s: float | None = 30.0


async def wait_for_start(far_end: FarEnd, timeout_s: float) -> CallStarted | None:
    """Read until the far end's :class:`CallStarted`; None when it hangs up or ``timeout_s`` passes first."""
    try:
        async with asyncio.timeout(timeout_s):
            while (event := await far_end.receive()) is not None:
                if isinstance(event, CallStarted):
                    return event
                if isinstance(event, FarEndHungUp):
                    return None
    except TimeoutError:
        log.warning("a far end connected but did not start a call within %g s; closing it", timeout_s)
    return None


async def run_call(
    far_end: FarEnd,
    open_session: SessionOpener,
    limits: CallLimits | None = None,
    *,
    started: CallStarted | None = None,
) -> str:
    """Run one call over ``far_end`` in the session ``open_session`` opens for it; return why it ended.

    ``started`` is the far end's start when the caller has already read it (the server does, to
    admit the call first); otherwise the start is awaited here. The recognizer is started before
    the handler runs, so no result is missed.
    """
    limits = limits or CallLimits()
    if started is None:
        started = await wait_for_start(far_end, limits.start_timeout_s)
        if started is None:
            await _close(far_end, "no start", limits)
            return "no start"
    # ops: every log line of the call carries its SID, and the call is one trace span (flow, outcome).
    with bind_call(started.call_id), span("voicefsm.call", call_sid=started.call_id) as call_span:
        async with open_session(started) as session:
            runtime = getattr(session.handler, "runtime", None)
            call_span.set_attribute("voicefsm.flow", str(getattr(runtime, "name", "none")))
            reason = await _drive(session, far_end, limits)
        result = getattr(session.handler, "result", None)
        call_span.set_attribute("voicefsm.outcome", str(getattr(result, "outcome", None) or reason))
        call_span.set_attribute("voicefsm.ended_by", reason)
        return reason


async def _drive(session: CallSession, far_end: FarEnd, limits: CallLimits) -> str:
    call = session.call
    call.emit(CallStarted(call.call_sid, call.caller, dict(call.parameters)))
    tasks: dict[str, asyncio.Task[str | None]] = {}
    reason = "ended"
    try:
        await call.start_stt()
        playout = None if far_end.echoes_marks else Playout(session.clock)
        if far_end.echoes_marks:
            call.send_ahead_s = limits.send_ahead_s
        sender = _Sender(call, far_end, playout)
        # The receive pump sends what a caller frame queued (the echo) when the send pump is idle. Not
        # without a send deadline shorter than the idle one: a send blocked in the receive pump must end
        # the call as a stuck far end, never be cut short by the idle timeout.
        idle_s, send_s = limits.idle_timeout_s, limits.send_timeout_s
        inline = playout is None and send_s is not None and (idle_s is None or send_s < idle_s)
        tasks["receive"] = asyncio.create_task(
            _receive_pump(call, far_end, limits, sender if inline else None), name="call-receive"
        )
        tasks["send"] = asyncio.create_task(_send_pump(call, sender), name="call-send")
        if send_s is not None:
            tasks["send-watch"] = asyncio.create_task(_send_watch(sender, send_s), name="call-send-watch")
        tasks["hangup"] = asyncio.create_task(_hangup_watch(call), name="call-hangup")
        if session.handler is not None:
            tasks["handler"] = asyncio.create_task(_run_handler(call, session.handler), name="call-handler")
        done, _ = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
        reason = _result_or(next(iter(done)), "ended")
    except asyncio.CancelledError:
        reason = "server shutdown"
        raise
    finally:
        await _teardown(call, far_end, tasks, reason, limits)
    return reason


class Playout:
    """A far end's playback, simulated: audio takes its length, a mark is reached when it has played.

    On a clock that moves by itself (real time, or the test kit's virtual clock) the playout
    sleeps until then; on a :class:`ManualClock` (``voicefsm chat``) the audio itself moves the
    clock. A clear drops what was still to play.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.playing_until = clock.now()

    async def played(self, item: OutboundItem) -> str | None:
        """Account for ``item``; for a mark, wait until it is reached and return its name."""
        now = self.clock.now()
        if isinstance(item, PlayAudio):
            # one mu-law byte a sample
            self.playing_until = max(self.playing_until, now) + len(item.ulaw) / SAMPLE_RATE_HZ
        elif isinstance(item, ClearBuffer):
            self.playing_until = now
        elif isinstance(item, PlaceMark):
            if isinstance(self.clock, ManualClock):
                self.clock.advance_to(self.playing_until)
            else:
                await self.clock.sleep(self.playing_until - now)
            return item.name
        return None


async def _receive_pump(call: Call, far_end: FarEnd, limits: CallLimits, sender: _Sender | None) -> str:
    idle_s = limits.idle_timeout_s
    loop = asyncio.get_running_loop()
    heard_at = [loop.time()]  # when the last event arrived
    while True:
        delay = None if idle_s is None else heard_at[0] + idle_s - loop.time()
        try:
            async with asyncio.timeout(delay) as idle:
                return await _receive_until_closed(call, far_end, idle, idle_s, heard_at, sender)
        except TimeoutError:
            if idle_s is not None and loop.time() - heard_at[0] >= idle_s:
                return f"no media for {idle_s:g} s"
            # an event came after the deadline was last moved: the line is not idle, wait on


async def _receive_until_closed(
    call: Call,
    far_end: FarEnd,
    idle: asyncio.Timeout,
    idle_s: float | None,
    heard_at: list[float],
    sender: _Sender | None,
) -> str:
    loop = asyncio.get_running_loop()
    # Moving the idle deadline costs a timer reschedule; 50 frames a second need it far less often.
    refresh_every_s = float("inf") if idle_s is None else min(1.0, idle_s / 10)
    refresh_at = loop.time() + refresh_every_s
    while True:
        event = await far_end.receive()
        now = heard_at[0] = loop.time()
        if now >= refresh_at and idle_s is not None:
            idle.reschedule(now + idle_s)
            refresh_at = now + refresh_every_s
        if event is None:
            return "connection closed"
        if isinstance(event, AudioIn):
            if sender is None:
                call.put_inbound(event.ulaw)
                continue
            # What this frame queues (the echo line's reply) is sent from here when the send pump is
            # idle: one task switch fewer per frame, and the order of the queue is kept.
            call.hold_outbound_wakeup = True
            try:
                call.put_inbound(event.ulaw)
            finally:
                call.hold_outbound_wakeup = False
            if call.has_outbound and not sender.busy and (lost := await sender.drain()) is not None:
                return lost
        elif isinstance(event, KeyPressed):
            call.emit(event)
        elif isinstance(event, MarkReached):
            call.mark_echoed(event.name)
        elif isinstance(event, FarEndHungUp):
            return event.reason
        else:
            call.log.warning("the far end started the call twice; the second start is ignored")


class _Sender:
    """Sends the call's queued items in order, one task at a time: the send pump, or the receive pump
    right after a caller frame queued its echo. ``since`` is when the send in progress began, for
    :func:`_send_watch`."""

    def __init__(self, call: Call, far_end: FarEnd, playout: Playout | None) -> None:
        self.call = call
        self.far_end = far_end
        self.playout = playout
        self.busy = False
        self.since: float | None = None
        self._loop = asyncio.get_running_loop()
        self._idle: asyncio.Future[None] | None = None

    async def drain(self) -> str | None:
        """Send everything queued; None once the queue is empty, or why the far end is gone."""
        call, far_end, playout, loop = self.call, self.far_end, self.playout, self._loop
        self.busy = True
        sent = 0
        try:
            while (item := call.take_outbound()) is not None:
                sent += 1
                if sent % _YIELD_EVERY_SENDS == 0:
                    # A burst of queued audio to an open socket never suspends, so without this the loop
                    # would neither serve other calls meanwhile nor run the transport's connection_lost:
                    # asyncio logs a warning for every write past the fifth to a lost socket.
                    await asyncio.sleep(0)
                self.since = loop.time()
                try:
                    await far_end.send(item)
                except TransportClosed as exc:
                    return f"connection lost ({exc})"
                finally:
                    self.since = None
                if playout is not None and (mark := await playout.played(item)) is not None:
                    call.mark_echoed(mark)
            return None
        finally:
            self.busy = False
            idle, self._idle = self._idle, None
            if idle is not None and not idle.done():  # done: the send pump was cancelled meanwhile
                idle.set_result(None)

    async def wait_idle(self) -> None:
        """Wait until the task sending now has sent everything queued."""
        if self.busy:
            if self._idle is None:
                self._idle = self._loop.create_future()
            await self._idle


async def _send_pump(call: Call, sender: _Sender) -> str:
    while await call.wait_outbound():
        if sender.busy:  # the receive pump is sending; it sends what is queued now as well
            await sender.wait_idle()
            continue
        if (lost := await sender.drain()) is not None:
            return lost
    return "ended"


async def _send_watch(sender: _Sender, timeout_s: float) -> str:
    """End the call when one send has taken ``timeout_s``: a far end that stopped reading (a full TCP
    window) would otherwise have audio queued for it without bound. One timer per ``timeout_s``, not
    one per frame sent."""
    loop = asyncio.get_running_loop()
    while True:
        since, now = sender.since, loop.time()
        if since is None:
            # A send that begins from now on is late at now + timeout_s at the earliest.
            await asyncio.sleep(timeout_s)
        elif now - since >= timeout_s:
            return f"connection lost (the far end took no audio for {timeout_s:g} s)"
        else:
            await asyncio.sleep(since + timeout_s - now)


async def _hangup_watch(call: Call) -> str:
    await call.hangup_requested.wait()
    # Let audio queued before the hang-up (a goodbye already confirmed by its mark) go first.
    return call.hangup_reason or "hangup"


async def _run_handler(call: Call, handler: CallHandler) -> str:
    try:
        await handler(call)
    except Exception:
        call.log.exception("the call handler failed; ending the call")
        return "handler error"
    return call.hangup_reason or "handler finished"


def _result_or(task: asyncio.Task[str | None], default: str) -> str:
    if task.cancelled():
        return default
    if task.exception() is not None:
        return f"internal error: {task.exception()!r}"
    return task.result() or default


async def _teardown(
    call: Call,
    far_end: FarEnd,
    tasks: dict[str, asyncio.Task[str | None]],
    reason: str,
    limits: CallLimits,
) -> None:
    call.signal_disconnected(reason)
    handler = tasks.pop("handler", None)
    if handler is not None and not handler.done():
        # The handler (a flow) saw `disconnected`; let it record and reach its final state.
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(handler), limits.handler_grace_s)
        if not handler.done():
            call.log.warning(
                "the call handler did not finish within %g s; cancelling it", limits.handler_grace_s
            )
        tasks["handler"] = handler
    for task in tasks.values():
        task.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    await call.stop_stt()
    await _close(far_end, reason, limits)


async def _close(far_end: FarEnd, reason: str, limits: CallLimits) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limits.close_timeout_s):
            await far_end.close(reason)
