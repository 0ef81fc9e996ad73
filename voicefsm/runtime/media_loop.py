"""Run one call over one media transport, from ``start`` to the last task awaited.

:func:`run_call` owns every task of the call: the receive pump, the send pump, the
hang-up watcher, the recognizer and the application's handler. Whatever ends the call
(a ``stop``, a lost socket, an idle stream, a hang-up, the handler returning, server
shutdown), the same teardown runs once: the call is marked disconnected exactly once,
the handler gets a moment to finish, the recognizer is stopped, every task is cancelled
and awaited, and the transport is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from voicefsm.core.events import Dtmf as DtmfEvent
from voicefsm.core.events import WsConnected
from voicefsm.core.twilio_media import Dtmf, Mark, Media, Start, Stop
from voicefsm.runtime.call import Call
from voicefsm.transports.base import MediaTransport, TransportClosed

log = logging.getLogger(__name__)

CallHandler = Callable[[Call], Awaitable[None]]
StartCheck = Callable[[Start], str | None]


@dataclass(frozen=True, slots=True)
class CallLimits:
    """Deadlines of one call's media loop, in seconds."""

    start_timeout_s: float = 10.0
    idle_timeout_s: float | None = 20.0
    handler_grace_s: float = 5.0
    close_timeout_s: float = 5.0


async def wait_for_start(transport: MediaTransport, timeout_s: float) -> Start | None:
    """Read until the stream's ``start``; None when the connection closes or ``timeout_s`` passes first."""
    try:
        async with asyncio.timeout(timeout_s):
            while (message := await transport.receive()) is not None:
                if isinstance(message, Start):
                    return message
                if isinstance(message, Stop):
                    return None
    except TimeoutError:
        log.warning("a media stream connected but sent no start within %g s; closing it", timeout_s)
    return None


def connected_event(start: Start, caller: str | None = None) -> WsConnected:
    """The call event for a stream's ``start``; ``caller`` comes from the signed webhook when known."""
    parameters = {key: value for key, value in start.custom_parameters.items() if key != "token"}
    caller = caller or parameters.get("caller") or parameters.get("callerNumber")
    return WsConnected(start.call_sid, start.stream_sid, caller, parameters)


async def run_call(
    call: Call,
    transport: MediaTransport,
    start: Start,
    handler: CallHandler | None,
    *,
    limits: CallLimits | None = None,
    caller: str | None = None,
) -> str:
    """Run ``call`` over ``transport`` after its ``start``; return why the call ended.

    The recognizer is built and started before the handler runs, so no result is missed.
    """
    limits = limits or CallLimits()
    call.signal_ws_connected(connected_event(start, caller))
    tasks: dict[str, asyncio.Task[str | None]] = {}
    reason = "ended"
    try:
        await call.start_stt()
        tasks["receive"] = asyncio.create_task(_receive_pump(call, transport, limits), name="call-receive")
        tasks["send"] = asyncio.create_task(_send_pump(call, transport), name="call-send")
        tasks["hangup"] = asyncio.create_task(_hangup_watch(call), name="call-hangup")
        if handler is not None:
            tasks["handler"] = asyncio.create_task(_run_handler(call, handler), name="call-handler")
        done, _ = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
        first = next(iter(done))
        reason = _result_or(first, "ended")
    except asyncio.CancelledError:
        reason = "server shutdown"
        raise
    finally:
        await _teardown(call, transport, tasks, reason, limits)
    return reason


async def _receive_pump(call: Call, transport: MediaTransport, limits: CallLimits) -> str:
    idle_s = limits.idle_timeout_s
    loop = asyncio.get_running_loop()
    heard_at = [loop.time()]  # when the last message arrived
    while True:
        delay = None if idle_s is None else heard_at[0] + idle_s - loop.time()
        try:
            async with asyncio.timeout(delay) as idle:
                return await _receive_until_closed(call, transport, idle, idle_s, heard_at)
        except TimeoutError:
            if idle_s is not None and loop.time() - heard_at[0] >= idle_s:
                return f"no media for {idle_s:g} s"
            # a message came after the deadline was last moved: the line is not idle, wait on


async def _receive_until_closed(
    call: Call,
    transport: MediaTransport,
    idle: asyncio.Timeout,
    idle_s: float | None,
    heard_at: list[float],
) -> str:
    loop = asyncio.get_running_loop()
    # Moving the idle deadline costs a timer reschedule; 50 frames a second need it far less often.
    refresh_every_s = float("inf") if idle_s is None else min(1.0, idle_s / 10)
    refresh_at = loop.time() + refresh_every_s
    while True:
        message = await transport.receive()
        now = heard_at[0] = loop.time()
        if now >= refresh_at and idle_s is not None:
            idle.reschedule(now + idle_s)
            refresh_at = now + refresh_every_s
        if message is None:
            return "connection closed"
        if isinstance(message, Media):
            call.put_inbound(message.payload)
        elif isinstance(message, Dtmf):
            call.emit(DtmfEvent(message.digit))
        elif isinstance(message, Mark):
            call.mark_echoed(message.name)
        elif isinstance(message, Stop):
            # Not necessarily a hang-up: Twilio also stops the stream when the call is redirected.
            return "stream stopped"


async def _send_pump(call: Call, transport: MediaTransport) -> str:
    while (item := await call.next_outbound()) is not None:
        try:
            await transport.send(item)
        except TransportClosed as exc:
            return f"connection lost ({exc})"
    return "ended"


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
    transport: MediaTransport,
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
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limits.close_timeout_s):
            await transport.close(reason)
