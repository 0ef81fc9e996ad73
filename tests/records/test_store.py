"""Call records: written as the call goes, read back whole, kept across restarts and DB failures."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import logging
import signal
import socket
import sys
import textwrap
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pgcluster import Cluster
from pydantic import BaseModel
from sqlalchemy import text

from voicefsm.records import (
    CallStore,
    InvalidRecordError,
    RecordWriter,
    StoreUnavailableError,
    UnknownCallError,
    encode_value,
)
from voicefsm.records import store as store_module
from voicefsm.records.batch import BatchRecord

UTC = dt.UTC
T0 = dt.datetime(2025, 3, 1, 9, 0, 0, tzinfo=UTC)
CALLER = "+15551234567"
SECRET_WORDS = "my card number is four one one one"
CALL = "CA00000000000000000000000000000001"


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.fixture
async def store(records_url: str) -> AsyncIterator[CallStore]:
    """A store on an empty database: each test using it runs on SQLite and on PostgreSQL."""
    opened = await CallStore.open(records_url)
    yield opened
    await opened.aclose()


class Party(enum.Enum):
    SMALL = "small"
    LARGE = "large"


class Booking(BaseModel):
    name: str
    when: dt.datetime


@dataclasses.dataclass
class Seat:
    row: int
    letter: str


async def test_a_whole_call_written_turn_by_turn_reads_back_in_order(store: CallStore) -> None:
    assert await store.call_started(CALL, flow="booking", caller=CALLER, direction="inbound", started_at=T0)
    await store.state(CALL, "greeting")
    assert (
        await store.turn(
            CALL, speaker="agent", text="Hello, how many people?", started_at=at(0.5), ended_at=at(2.0)
        )
        == 1
    )
    await store.transition(CALL, source="greeting", event="prompt_done", target="ask_party", at=at(2.0))
    # A caller-side time in another zone is stored and read back as the same instant, in UTC.
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert (
        await store.turn(
            CALL,
            speaker="caller",
            text="four",
            started_at=at(3.0).astimezone(plus_two),
            ended_at=at(3.5),
            latency_ms=412.6,
        )
        == 2
    )
    await store.slot(CALL, "party", 4)
    await store.slot(CALL, "size", Party.LARGE)
    await store.slot(CALL, "party", 5)  # corrected: replaces, does not duplicate
    await store.turn(
        CALL,
        speaker="agent",
        text="Which day wou",
        started_at=at(4.0),
        ended_at=at(4.6),
        latency_ms=500,
        interrupted=True,
    )
    await store.turn(CALL, speaker="caller", text="1", started_at=at(4.6), ended_at=at(4.6), via="dtmf")
    await store.slot(CALL, "booking", Booking(name="Ada", when=at(86_400)))
    await store.slot(CALL, "day", dt.date(2025, 3, 2))
    await store.error(
        CALL, kind="stt", where="ask_day", message="stream closed (1011); reconnected", at=at(5.0)
    )
    await store.transition(CALL, source="ask_party", event="filled", target="goodbye", at=at(5.5))
    await store.set_recording(CALL, Path("/recordings") / f"{CALL}.wav")
    assert await store.call_ended(CALL, outcome="completed", ended_at=at(7.25))

    record = await store.get_call(CALL)

    assert record is not None
    assert (record.flow, record.direction, record.caller) == ("booking", "inbound", CALLER)
    assert (record.started_at, record.ended_at, record.duration_s) == (T0, at(7.25), 7.25)
    assert (record.outcome, record.current_state, record.final_state) == ("completed", "goodbye", "goodbye")
    assert record.recording_path == f"/recordings/{CALL}.wav"
    assert record.turn_count == 4
    lines = [(t.seq, t.speaker, t.text, t.via, t.interrupted, t.latency_ms) for t in record.transcript]
    assert lines == [
        (1, "agent", "Hello, how many people?", "speech", False, None),
        (2, "caller", "four", "speech", False, 413),
        (3, "agent", "Which day wou", "speech", True, 500),
        (4, "caller", "1", "dtmf", False, None),
    ]
    assert [(t.started_at, t.ended_at) for t in record.transcript] == [
        (at(0.5), at(2.0)),
        (at(3.0), at(3.5)),
        (at(4.0), at(4.6)),
        (at(4.6), at(4.6)),
    ]
    assert all(t.started_at.tzinfo is UTC for t in record.transcript)
    assert [(p.seq, p.source, p.event, p.target, p.at) for p in record.path] == [
        (1, "greeting", "prompt_done", "ask_party", at(2.0)),
        (2, "ask_party", "filled", "goodbye", at(5.5)),
    ]
    assert record.slots == {
        "party": 5,
        "size": "large",
        "booking": {"name": "Ada", "when": "2025-03-02T09:00:00Z"},
        "day": "2025-03-02",
    }
    assert [(e.at, e.kind, e.where, e.message) for e in record.errors] == [
        (at(5.0), "stt", "ask_day", "stream closed (1011); reconnected")
    ]
    # What /api/calls/{sid} returns: plain JSON.
    assert record.model_dump(mode="json")["transcript"][1]["started_at"] == "2025-03-01T09:00:03Z"


async def test_a_sqlite_file_is_created_with_its_folder_in_wal_and_synchronous_full(tmp_path: Path) -> None:
    store = await CallStore.open(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'records.db'}")
    try:
        assert (tmp_path / "nested" / "dir" / "records.db").is_file()
        async with store.engine.connect() as connection:
            journal = (await connection.execute(text("PRAGMA journal_mode"))).scalar_one()
            synchronous = (await connection.execute(text("PRAGMA synchronous"))).scalar_one()
        await store.ping()
    finally:
        await store.aclose()
    assert (journal, synchronous) == ("wal", 2)  # 2 = FULL


async def test_records_are_on_disk_mid_call_and_a_restart_marks_the_call_abandoned(records_url: str) -> None:
    first = await CallStore.open(records_url)
    await first.call_started(CALL, flow="booking", caller=CALLER, started_at=T0)
    await first.call_started("CA-finished", flow="booking", caller=None, started_at=at(-60))
    await first.call_ended("CA-finished", outcome="hung_up", final_state="ask_party", ended_at=at(-30))
    await first.turn(CALL, speaker="agent", text="Hello", started_at=at(0), ended_at=at(1))
    await first.transition(CALL, source="greeting", event="prompt_done", target="ask_party", at=at(1))
    await first.turn(CALL, speaker="caller", text="two people", started_at=at(2), ended_at=at(3))
    await first.slot(CALL, "party", 2)
    await first.aclose()  # the process goes away mid-call: no call_ended

    second = await CallStore.open(records_url)
    try:
        record = await second.get_call(CALL)
        assert record is not None
        assert [t.text for t in record.transcript] == ["Hello", "two people"]
        assert (record.slots, record.current_state, record.ended_at) == ({"party": 2}, "ask_party", None)

        assert await second.recover_abandoned(at(600)) == 1
        assert await second.recover_abandoned(at(700)) == 0

        recovered = await second.get_call(CALL)
        finished = await second.get_call("CA-finished")
    finally:
        await second.aclose()
    assert recovered is not None
    assert (recovered.outcome, recovered.ended_at, recovered.final_state) == (
        "abandoned",
        at(600),
        "ask_party",
    )
    assert finished is not None
    assert (finished.outcome, finished.ended_at) == ("hung_up", at(-30))  # an ended call is left alone


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
async def test_every_turn_committed_before_a_sigkill_is_kept(records_url: str) -> None:
    url = records_url
    child = textwrap.dedent(
        f"""
        import asyncio, datetime as dt, os, signal, sys
        from voicefsm.records import CallStore

        async def main():
            store = await CallStore.open({url!r})
            await store.call_started({CALL!r}, flow="booking", caller={CALLER!r})
            for n in range(3):
                now = dt.datetime.now(dt.UTC)
                await store.turn({CALL!r}, speaker="caller", text=f"turn {{n}}", started_at=now)
            print("written", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # no close, no call_ended, no clean exit

        asyncio.run(main())
        """
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", child, stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(30):
        out, _ = await process.communicate()
    assert (out, process.returncode) == (b"written\n", -signal.SIGKILL)

    store = await CallStore.open(url)
    try:
        assert await store.recover_abandoned() == 1
        record = await store.get_call(CALL)
    finally:
        await store.aclose()
    assert record is not None
    assert ([t.text for t in record.transcript], record.outcome) == (
        ["turn 0", "turn 1", "turn 2"],
        "abandoned",
    )


async def test_call_started_is_idempotent_even_when_replayed_concurrently(store: CallStore) -> None:
    assert await store.call_started(CALL, flow="booking", caller=CALLER, started_at=T0)
    assert not await store.call_started(CALL, flow="other", caller="+15550000000", started_at=at(5))
    replays = await asyncio.gather(
        *(store.call_started("CA-replayed", flow="booking", caller=None, started_at=T0) for _ in range(5))
    )

    assert sorted(replays) == [False, False, False, False, True]
    calls = await store.list_calls()
    assert sorted(c.call_sid for c in calls) == ["CA-replayed", CALL]
    first = await store.get_call(CALL)
    assert first is not None
    assert (first.flow, first.caller, first.started_at) == ("booking", CALLER, T0)


async def test_the_first_end_wins_and_writes_for_an_unknown_call_say_what_to_do(store: CallStore) -> None:
    await store.call_started(CALL, flow="booking", caller=None, started_at=T0)
    assert await store.call_ended(CALL, outcome="transferred", final_state="transfer", ended_at=at(9))
    assert not await store.call_ended(CALL, outcome="completed", ended_at=at(10))  # late status callback
    assert not await store.call_ended("CA-unknown", outcome="completed")

    with pytest.raises(UnknownCallError) as caught:
        await store.turn("CA-unknown", speaker="caller", text="hi", started_at=T0)

    record = await store.get_call(CALL)
    assert record is not None
    assert (record.outcome, record.final_state, record.ended_at) == ("transferred", "transfer", at(9))
    assert caught.value.call_sid == "CA-unknown"
    assert "call_started" in str(caught.value)
    assert await store.get_call("CA-unknown") is None


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [("speaker", {"speaker": "bot"}), ("via", {"speaker": "caller", "via": "carrier-pigeon"})],
)
async def test_a_bad_field_is_refused_with_the_allowed_values(
    store: CallStore, field: str, kwargs: dict[str, Any]
) -> None:
    await store.call_started(CALL, flow="booking", caller=None, started_at=T0)

    with pytest.raises(InvalidRecordError) as caught:
        await store.turn(CALL, text="hi", started_at=T0, **kwargs)

    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)
    assert "use one of" in str(caught.value)


async def test_list_calls_is_newest_first_and_pages(store: CallStore) -> None:
    for n in range(5):
        await store.call_started(f"CA{n}", flow="booking", caller=None, started_at=at(n))
    await store.turn("CA3", speaker="agent", text="hello", started_at=at(3))
    await store.turn("CA3", speaker="caller", text="hi", started_at=at(4))

    everything = await store.list_calls()
    page = await store.list_calls(limit=2, offset=1)

    assert [c.call_sid for c in everything] == ["CA4", "CA3", "CA2", "CA1", "CA0"]
    assert [c.call_sid for c in page] == ["CA3", "CA2"]
    assert page[0].turn_count == 2
    assert page[1].turn_count == 0


async def test_delete_call_erases_everything_recorded_for_it(store: CallStore) -> None:
    await store.call_started(CALL, flow="booking", caller=CALLER, started_at=T0)
    await store.turn(CALL, speaker="caller", text=SECRET_WORDS, started_at=T0)
    await store.transition(CALL, source="a", event="e", target="b")
    await store.slot(CALL, "card", "4111")
    await store.error(CALL, kind="tts", where="a", message="timeout")

    assert await store.delete_call(CALL)
    assert not await store.delete_call(CALL)
    assert await store.get_call(CALL) is None
    async with store.engine.connect() as connection:
        for table in ("turns", "transitions", "slots", "errors"):
            assert (await connection.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one() == 0


def test_slot_values_encode_dates_enums_models_and_fall_back_to_text() -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque"

    value = {
        "at": dt.datetime(2025, 3, 1, 9, 30, tzinfo=UTC),
        "day": dt.date(2025, 3, 1),
        "time": dt.time(18, 30),
        "party": Party.SMALL,
        "seat": Seat(12, "C"),
        "tags": {"b", "a"},
        "price": Decimal("12.50"),
        "wait": dt.timedelta(minutes=2),
        "thing": Opaque(),
        "name": "Zoë",
    }

    assert encode_value(value) == (
        '{"at": "2025-03-01T09:30:00+00:00", "day": "2025-03-01", "time": "18:30:00", "party": "small", '
        '"seat": {"row": 12, "letter": "C"}, "tags": ["a", "b"], "price": "12.50", "wait": 120.0, '
        '"thing": "opaque", "name": "Zoë"}'
    )


async def test_opening_an_unusable_database_explains_what_to_set(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")

    with pytest.raises(StoreUnavailableError) as caught:
        await CallStore.open(f"sqlite+aiosqlite:///{tmp_path / 'file' / 'records.db'}")

    assert "VOICEFSM_DB_URL" in str(caught.value)


async def test_a_postgres_url_that_cannot_connect_is_reported_without_its_password() -> None:
    # Port 1 on loopback refuses at once when asyncpg is installed; without it the driver is named.
    with pytest.raises(StoreUnavailableError) as caught:
        await CallStore.open("postgresql+asyncpg://voicefsm:hunter2@127.0.0.1:1/voicefsm")

    assert "hunter2" not in str(caught.value)
    assert "postgresql+asyncpg://voicefsm:***@127.0.0.1:1/voicefsm" in str(caught.value)


# -- RecordWriter -------------------------------------------------------------------------------------------


class GatedStore(CallStore):
    """A seam: each turn waits for its own gate, so a test decides when a write finishes."""

    gates: dict[str, asyncio.Event]
    entered: dict[str, asyncio.Event]

    async def write_batch(self, records: Sequence[BatchRecord]) -> list[Any]:
        for kind, _, arguments in records:
            if kind == "turn":
                self.entered[arguments["text"]].set()
                await self.gates[arguments["text"]].wait()
        return await super().write_batch(records)


async def gated_store(url: str, *texts: str) -> GatedStore:
    store = await GatedStore.open(url)
    assert isinstance(store, GatedStore)
    store.gates = {t: asyncio.Event() for t in texts}
    store.entered = {t: asyncio.Event() for t in texts}
    return store


class FailingStore(CallStore):
    """A seam: turns fail like a database that went away (the first ``fail_times`` attempts, or always)."""

    fail_times = 10**9
    attempts = 0

    async def write_batch(self, records: Sequence[BatchRecord]) -> list[Any]:
        for kind, _, arguments in records:
            if kind == "turn":
                self.attempts += 1
                if self.attempts <= self.fail_times:
                    text = arguments["text"]
                    raise ConnectionError(f"database unreachable while writing {text!r} for {CALLER}")
        return await super().write_batch(records)


async def test_the_writer_queues_without_awaiting_and_flush_waits_for_the_writes(store: CallStore) -> None:
    clock_now = [at(1)]
    writer = RecordWriter(store, clock=lambda: clock_now[0])
    writer.start()
    try:
        chosen = ["window"]
        writer.call_started(CALL, flow="booking", caller=CALLER)
        writer.turn(
            CALL, speaker="agent", text="Where would you like to sit?", started_at=at(1), ended_at=at(2)
        )
        writer.transition(CALL, source="greeting", event="prompt_done", target="ask_seat")
        writer.slot(CALL, "seats", chosen)
        chosen.append("aisle")  # the slot was recorded as it was when it was set
        clock_now[0] = at(99)  # times were taken when the records were queued, not when written
        assert writer.pending == 4

        await writer.flush()

        assert (writer.pending, writer.written, writer.dropped) == (0, 4, 0)
        record = await store.get_call(CALL)
        assert record is not None
        assert (record.started_at, record.path[0].at) == (at(1), at(1))
        assert record.slots == {"seats": ["window"]}
        assert [t.text for t in record.transcript] == ["Where would you like to sit?"]
    finally:
        await writer.aclose()


async def test_a_batch_gathers_but_a_calls_end_is_written_without_waiting(store: CallStore) -> None:
    # Records linger so that calls starting together share a transaction; a call's end does not
    # (its page, the API and a resuming worker look for it next). The linger here is a minute.
    ended_written = asyncio.Event()  # flush() would hurry the batch itself: watch the store instead
    write_batch = store.write_batch

    async def watched(records: Sequence[BatchRecord]) -> list[Any]:
        written = await write_batch(records)
        if any(kind == "call_ended" for kind, _, _ in records):
            ended_written.set()
        return written

    store.write_batch = watched  # type: ignore[method-assign]
    async with RecordWriter(store, linger_s=60.0) as writer:
        writer.call_started(CALL, flow="booking", caller=CALLER, started_at=at(1))
        writer.state(CALL, "greeting")
        await asyncio.sleep(0)  # the writer task takes the batch and starts its pause
        assert writer.pending == 2 and await store.get_call(CALL) is None
        writer.call_ended(CALL, outcome="completed", ended_at=at(9))
        await asyncio.wait_for(ended_written.wait(), 5)
        record = await store.get_call(CALL)
        assert record is not None
        assert (record.outcome, record.current_state, writer.pending) == ("completed", "greeting", 0)


async def test_flush_waits_for_records_queued_before_it_and_not_after(records_url: str) -> None:
    store = await gated_store(records_url, "first", "second")
    writer = RecordWriter(store, batch_size=1)  # one record at a time: flush's mark between two turns shows
    writer.start()
    try:
        writer.call_started(CALL, flow="booking", caller=None, started_at=T0)
        writer.turn(CALL, speaker="caller", text="first", started_at=at(1))
        flushing = asyncio.create_task(writer.flush())
        writer.turn(CALL, speaker="caller", text="second", started_at=at(2))
        async with asyncio.timeout(5):
            await store.entered["first"].wait()
        assert not flushing.done()

        store.gates["first"].set()
        async with asyncio.timeout(5):
            await flushing  # done although "second" is still blocked
        record = await store.get_call(CALL)
        assert record is not None
        assert [t.text for t in record.transcript] == ["first"]

        store.gates["second"].set()
        async with asyncio.timeout(5):
            await writer.flush()
        record = await store.get_call(CALL)
        assert record is not None
        assert [t.text for t in record.transcript] == ["first", "second"]
    finally:
        await writer.aclose()
        await store.aclose()


async def test_flush_before_start_refuses_rather_than_hang(store: CallStore) -> None:
    writer = RecordWriter(store)
    await writer.flush()  # nothing queued: nothing to wait for
    writer.state(CALL, "greeting")

    with pytest.raises(RuntimeError, match="start"):
        await writer.flush()
    await writer.aclose()


async def test_without_a_spool_a_dead_database_costs_counted_records_not_the_call(
    records_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = await FailingStore.open(records_url)
    assert isinstance(store, FailingStore)
    writer = RecordWriter(store, retries=2, retry_delay_s=0)
    writer.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="voicefsm.records"):
            writer.call_started(CALL, flow="booking", caller=CALLER, started_at=T0)
            for n in range(3):
                writer.turn(CALL, speaker="caller", text=f"{SECRET_WORDS} {n}", started_at=at(n))
            writer.transition(CALL, source="ask", event="filled", target="done")
            writer.slot(CALL, "party", 2)
            writer.turn(CALL, speaker="agent", text="still here", started_at=at(9))
            await writer.flush()
    finally:
        await writer.aclose()
    record = await store.get_call(CALL)
    await store.aclose()

    # One batch of 7, tried 1 + 2 times (the turns fail), then lost: there is no spool to keep it in.
    assert (writer.lost, writer.written, writer.retried, store.attempts) == (7, 0, 14, 3)
    assert record is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([r for r in warnings if "a turn record" in r.getMessage()]) == 1
    assert any("7 records in all were lost" in r.getMessage() for r in warnings)
    assert any("no spool" in r.getMessage() for r in warnings)
    # The seam's error quotes the words and the number, as a driver's might: they stay at DEBUG.
    assert SECRET_WORDS in caplog.text
    for warning in warnings:
        assert SECRET_WORDS not in warning.getMessage()
        assert CALLER not in warning.getMessage()


async def test_a_database_blip_is_retried_and_nothing_is_lost(records_url: str) -> None:
    store = await FailingStore.open(records_url)
    assert isinstance(store, FailingStore)
    store.fail_times = 1
    writer = RecordWriter(store, retries=2, retry_delay_s=0)
    writer.start()
    try:
        writer.call_started(CALL, flow="booking", caller=None, started_at=T0)
        writer.turn(CALL, speaker="caller", text="two", started_at=at(1))
        await writer.flush()
    finally:
        await writer.aclose()
    record = await store.get_call(CALL)
    await store.aclose()

    assert (writer.dropped, store.attempts, writer.retried, writer.written) == (0, 2, 2, 2)
    assert record is not None
    assert [t.text for t in record.transcript] == ["two"]


async def test_a_real_sql_error_is_logged_without_the_callers_words(
    store: CallStore, caplog: pytest.LogCaptureFixture
) -> None:
    async with store.engine.begin() as connection:
        await connection.execute(text("DROP TABLE turns"))
    writer = RecordWriter(store, retries=1, retry_delay_s=0)
    writer.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="voicefsm.records"):
            writer.call_started(CALL, flow="booking", caller=CALLER, started_at=T0)
            writer.turn(CALL, speaker="caller", text=SECRET_WORDS, started_at=at(1))
            await writer.flush()
    finally:
        await writer.aclose()

    assert writer.dropped == 2  # the call and its turn were one batch
    missing = {"sqlite": "no such table: turns", "postgresql": 'relation "turns" does not exist'}
    assert missing[store.engine.dialect.name] in caplog.text
    # Even at DEBUG, with tracebacks: SQL parameters are hidden by the engine.
    assert SECRET_WORDS not in caplog.text
    assert CALLER not in caplog.text


async def test_a_hung_write_times_out_and_the_writer_moves_on(records_url: str) -> None:
    store = await gated_store(records_url, "never")
    writer = RecordWriter(store, retries=0, write_timeout_s=0.05, batch_size=1)
    writer.start()
    try:
        writer.call_started(CALL, flow="booking", caller=None, started_at=T0)
        writer.turn(CALL, speaker="caller", text="never", started_at=at(1))
        writer.state(CALL, "after")
        async with asyncio.timeout(5):
            await writer.flush()
    finally:
        await writer.aclose()
    record = await store.get_call(CALL)
    await store.aclose()

    assert (writer.dropped, writer.written) == (1, 2)
    assert record is not None
    assert record.current_state == "after"


async def test_a_full_queue_or_a_closed_writer_drops_and_counts_without_raising(store: CallStore) -> None:
    writer = RecordWriter(store, max_queue=2)
    writer.state(CALL, "a")
    writer.state(CALL, "b")
    writer.state(CALL, "c")  # the queue holds 2
    assert writer.dropped == 1

    await writer.aclose()  # never started: the 2 queued are lost, and counted
    writer.turn(CALL, speaker="caller", text="late", started_at=T0)
    writer.call_ended(CALL, outcome="completed")

    assert writer.dropped == 5
    with pytest.raises(RuntimeError, match="new RecordWriter"):
        writer.start()


async def test_aclose_drains_within_its_deadline_then_stops_the_task(records_url: str) -> None:
    store = await gated_store(records_url, "stuck")
    writer = RecordWriter(store, batch_size=1)
    writer.start()
    writer.call_started(CALL, flow="booking", caller=None, started_at=T0)
    writer.turn(CALL, speaker="caller", text="stuck", started_at=at(1))
    writer.state(CALL, "queued behind")
    async with asyncio.timeout(5):
        await store.entered["stuck"].wait()

    closing = asyncio.create_task(writer.aclose(drain_timeout_s=0.05))
    await asyncio.sleep(0)  # one turn of the loop: aclose is now draining
    flushing = asyncio.ensure_future(writer.flush())  # a flush during the drain waits, it does not raise
    async with asyncio.timeout(5):
        await closing
        await flushing
    record = await store.get_call(CALL)
    await store.aclose()

    assert (writer.written, writer.dropped, writer.pending) == (1, 2, 0)
    assert record is not None  # what was written before the deadline stays
    await writer.aclose()  # idempotent


async def test_fifty_concurrent_calls_through_one_writer_are_all_stored(store: CallStore) -> None:
    writer = RecordWriter(store)
    writer.start()

    async def one_call(n: int) -> None:
        sid = f"CA{n:032d}"
        writer.call_started(sid, flow="booking", caller=f"+1555000{n:04d}", started_at=at(n))
        for turn in range(3):
            writer.turn(sid, speaker="agent", text=f"{n}: prompt {turn}", started_at=at(n + turn))
            await asyncio.sleep(0)  # let the other calls interleave their records
            writer.turn(sid, speaker="caller", text=f"{n}: answer {turn}", started_at=at(n + turn + 0.5))
            writer.transition(sid, source=f"s{turn}", event="heard", target=f"s{turn + 1}")
            writer.slot(sid, "answers", turn + 1)
            await asyncio.sleep(0)
        writer.call_ended(sid, outcome="completed")

    try:
        await asyncio.gather(*(one_call(n) for n in range(50)))
        # 700 writes, one transaction each (~2 s here on either backend): the bound only stops a hang,
        # with room for a loaded machine (a PostgreSQL write is several round trips).
        async with asyncio.timeout(60):
            await writer.flush()
    finally:
        await writer.aclose()

    assert writer.dropped == 0
    calls = await store.list_calls(limit=100)
    assert len(calls) == 50
    for n in range(50):
        record = await store.get_call(f"CA{n:032d}")
        assert record is not None
        expected = [f"{n}: {kind} {turn}" for turn in range(3) for kind in ("prompt", "answer")]
        assert [t.text for t in record.transcript] == expected
        assert [t.seq for t in record.transcript] == list(range(1, 7))
        assert [p.target for p in record.path] == ["s1", "s2", "s3"]
        assert (record.slots, record.outcome, record.final_state) == ({"answers": 3}, "completed", "s3")


async def test_a_postgresql_server_that_never_answers_fails_the_open_at_the_connect_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A port that accepts TCP connections (the kernel's backlog) but where nothing ever speaks.
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    monkeypatch.setattr(store_module, "CONNECT_TIMEOUT_S", 0.5)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(StoreUnavailableError) as caught:
            async with asyncio.timeout(10):
                await CallStore.open(f"postgresql://voicefsm@127.0.0.1:{port}/voicefsm")
        took = asyncio.get_running_loop().time() - started
    finally:
        silent.close()

    assert 0.5 <= took < 5
    assert (
        f"cannot open the call records at postgresql://voicefsm@127.0.0.1:{port}/voicefsm: "
        "the server did not answer within 0.5 s (TimeoutError); check --db / VOICEFSM_DB_URL"
    ) in str(caught.value)


async def test_a_postgresql_database_that_does_not_exist_is_named_by_the_servers_own_error(
    postgres_cluster: Cluster,
) -> None:
    url = postgres_cluster.url("no_such_database")

    with pytest.raises(StoreUnavailableError) as caught:
        await CallStore.open(url)

    assert str(caught.value).startswith(
        f'cannot open the call records at {url}: InvalidCatalogNameError: database "no_such_database" '
        "does not exist; check --db / VOICEFSM_DB_URL"
    )


async def test_a_call_marked_abandoned_while_it_was_live_elsewhere_still_gets_its_real_end(
    records_url: str,
) -> None:
    store = await CallStore.open(records_url)
    try:
        await store.call_started(CALL, flow="booking", caller=CALLER, started_at=T0)
        assert await store.recover_abandoned(at(10)) == 1  # a second worker started on the shared database
        assert await store.call_ended(CALL, outcome="completed", final_state="booked", ended_at=at(60))
        assert not await store.call_ended(CALL, outcome="hung_up", ended_at=at(61))  # the first real end wins
        record = await store.get_call(CALL)
    finally:
        await store.aclose()
    assert record is not None
    assert (record.outcome, record.final_state, record.ended_at) == ("completed", "booked", at(60))
