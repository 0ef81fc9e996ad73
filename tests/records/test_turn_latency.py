"""A caller turn's wait for its answer, by stage, is kept with the turn and read back with the call."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest

from voicefsm.records import CallStore, RecordWriter, TurnLatencyRecord

CALL = "CA" + "4" * 32
AT = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
async def store(records_url: str) -> AsyncIterator[CallStore]:
    opened = await CallStore.open(records_url)
    try:
        yield opened
    finally:
        await opened.aclose()


async def test_a_caller_turn_keeps_its_breakdown_and_agent_turns_have_none(store: CallStore) -> None:
    async with RecordWriter(store) as writer:
        writer.call_started(CALL, flow="booking", caller=None, started_at=AT)
        writer.turn(CALL, speaker="agent", text="Which day?", started_at=AT)
        writer.turn(
            CALL,
            speaker="caller",
            text="Tuesday",
            started_at=AT,
            via="speech",
            commit_ms=120.4,
            parse_ms=1.2,
            transition_ms=3.0,
            first_audio_ms=400.0,
            tts_first_byte_ms=400.0,
            tts_source="provider",
            prefetched=True,
        )
        writer.turn(CALL, speaker="caller", text="hello?", started_at=AT, commit_ms=0.0, parse_ms=None)
        await writer.flush()
    record = await store.get_call(CALL)
    assert record is not None
    agent, answered, unanswered = record.transcript
    assert agent.breakdown is None
    assert answered.breakdown == TurnLatencyRecord(
        commit_ms=120,
        parse_ms=1,
        transition_ms=3,
        first_audio_ms=400,
        tts_first_byte_ms=400,
        tts_source="provider",
        prefetched=True,
    )
    assert answered.breakdown.total_ms == 524
    assert unanswered.breakdown is not None and unanswered.breakdown.total_ms is None  # never answered
    dumped = record.model_dump(mode="json")["transcript"][1]["breakdown"]
    assert dumped["total_ms"] == 524 and dumped["tts_source"] == "provider"
