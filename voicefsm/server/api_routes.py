"""The JSON API: the flow, live and past calls, caller injection (dev mode), and live call events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field, model_validator

from voicefsm.core.events import KEYPAD_DIGITS, Committed, KeyPressed
from voicefsm.records import CallRecord, CallSummary
from voicefsm.server.state import ServerState

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["api"])

#: The browser opens a call's events right after its stream's ``start``; the call may need a moment.
FEED_WAIT_S = 5.0
#: How long a request for a call not yet in the database waits for the records queued before it.
RECORDS_WAIT_S = 2.0


def _state(request: Request | WebSocket) -> ServerState:
    state: ServerState = request.app.state.voicefsm
    return state


async def _find_call(state: ServerState, call_sid: str) -> CallRecord | None:
    """The call's record; one that only just started (or ended) may still wait in the record writer's
    batch (or its spool, while the database was busy), so before answering "no such call" the records
    queued so far are written."""
    if state.store is None:
        return None
    writer = state.writer
    # Asked before the read: a batch that lands while the read runs is not in what the read saw.
    queued = writer is not None and writer.started and bool(writer.pending or writer.spool_depth)
    record = await state.store.get_call(call_sid)
    if record is None and writer is not None and queued:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RECORDS_WAIT_S):
                await writer.settle()  # written, or replayed from the spool once the database answers
        record = await state.store.get_call(call_sid)
    return record


class CallerInput(BaseModel):
    """What the caller 'says' (text) or presses (digits), injected into a live call."""

    text: str | None = Field(None, max_length=500)
    digits: str | None = Field(None, max_length=32)

    @model_validator(mode="after")
    def _one_of(self) -> CallerInput:
        if (self.text is None) == (self.digits is None):
            raise ValueError('send exactly one of "text" or "digits"')
        if self.digits is not None and not set(self.digits) <= KEYPAD_DIGITS:
            raise ValueError("digits may only contain 0-9, *, # and A-D")
        return self


@router.get("/flow")
async def flow_description(request: Request) -> dict[str, Any]:
    """The served flow: its states, transitions and slots (for the diagram)."""
    description = _state(request).flow_description
    if description is None:
        raise HTTPException(404, "this server runs no flow")
    return description


@router.get("/calls")
async def list_calls(request: Request, limit: int = 50, offset: int = 0) -> list[CallSummary]:
    """Past and live calls, newest first."""
    store = _state(request).store
    if store is None:
        return []
    return await store.list_calls(limit=max(1, min(limit, 500)), offset=max(0, offset))


@router.get("/calls/{call_sid}")
async def get_call(request: Request, call_sid: str) -> dict[str, Any]:
    """One call: state, slots, transcript with timings, the path through the states, errors."""
    state = _state(request)
    record = await _find_call(state, call_sid)
    if record is None:
        raise HTTPException(404, f"no call {call_sid}")
    body = record.model_dump(mode="json")
    body["recording_url"] = f"/api/calls/{call_sid}/recording" if record.recording_path else None
    body["live"] = call_sid in state.registry.active
    return body


@router.get("/calls/{call_sid}/recording")
async def get_recording(request: Request, call_sid: str) -> FileResponse:
    """The call's recording as a WAV file."""
    state = _state(request)
    record = await _find_call(state, call_sid)
    path = Path(record.recording_path) if record is not None and record.recording_path else None
    if path is None or not await asyncio.to_thread(path.is_file):
        raise HTTPException(404, f"no recording for call {call_sid}")
    return FileResponse(path, media_type="audio/wav", filename=f"{call_sid}.wav")


@router.post("/calls/{call_sid}/caller", status_code=202)
async def inject_caller_input(request: Request, call_sid: str, body: CallerInput) -> Response:
    """Dev mode only: hand typed text or keypad digits to a live call as if the caller said them."""
    state = _state(request)
    if not state.settings.dev_mode:
        raise HTTPException(403, "caller injection is only available in dev mode (no TWILIO_AUTH_TOKEN)")
    call = state.registry.active.get(call_sid)
    if call is None:
        raise HTTPException(404, f"no live call {call_sid}")
    if body.text is not None:
        call.emit(Committed(body.text, via="text"))
    else:
        for digit in body.digits or "":
            call.emit(KeyPressed(digit))
    return Response(status_code=202)


@router.websocket("/calls/{call_sid}/events")
async def call_events(websocket: WebSocket, call_sid: str) -> None:
    """Live updates of one call: a snapshot, then state, turn, slot and ended messages."""
    state = _state(websocket)
    await websocket.accept()
    feed = await state.feeds.wait_for(call_sid, FEED_WAIT_S)
    if feed is None:
        await websocket.send_json({"type": "ended", "reason": "no such live call"})
        await websocket.close()
        return
    queue = feed.subscribe()
    try:
        while (message := await queue.get()) is not None:
            await websocket.send_json(message)
        await websocket.close()
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        feed.unsubscribe(queue)
        with contextlib.suppress(Exception):
            await websocket.close()
