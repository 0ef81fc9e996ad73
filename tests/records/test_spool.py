"""Records are never silently dropped: batched writes, retries, the on-disk spool and its replay."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from voicefsm.records import CallStore, RecordWriter
from voicefsm.records.spool import RecordSpool, decode_record, encode_record

T0 = dt.datetime(2025, 3, 1, 9, 0, 0, tzinfo=dt.UTC)
CALLER = "+15551234567"


def sid(n: int) -> str:
    return f"CA{n:032d}"


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


class SwitchableStore(CallStore):
    """A seam: a database that can be switched off (every batch fails like a lost connection)."""

    down = False
    batches: list[int]
    answered: asyncio.Event

    async def write_batch(self, records: Sequence[tuple[str, str, Mapping[str, Any]]]) -> None:
        self.batches.append(len(records))
        if self.down:
            raise ConnectionError("connection refused")
        await super().write_batch(records)
        self.answered.set()


async def switchable(url: str) -> SwitchableStore:
    store = await SwitchableStore.open(url)
    assert isinstance(store, SwitchableStore)
    store.batches = []
    store.answered = asyncio.Event()
    return store


def one_call(writer: RecordWriter, n: int, turns: int = 3) -> None:
    writer.call_started(sid(n), flow="booking", caller=CALLER, started_at=at(n))
    for turn in range(turns):
        writer.turn(sid(n), speaker="agent", text=f"{n}: prompt {turn}", started_at=at(n + turn))
        writer.transition(sid(n), source=f"s{turn}", event="heard", target=f"s{turn + 1}")
    writer.slot(sid(n), "party", {"size": n, "when": "tomorrow"})
    writer.call_ended(sid(n), outcome="completed", ended_at=at(n + 60))


async def assert_call_complete(store: CallStore, n: int, turns: int = 3) -> None:
    record = await store.get_call(sid(n))
    assert record is not None, f"call {n} missing"
    assert [t.text for t in record.transcript] == [f"{n}: prompt {turn}" for turn in range(turns)]
    assert [step.target for step in record.path] == [f"s{turn + 1}" for turn in range(turns)]
    assert record.slots == {"party": {"size": n, "when": "tomorrow"}}
    assert (record.outcome, record.ended_at) == ("completed", at(n + 60))


async def test_queued_records_are_written_in_batches_one_transaction_each(records_url: str) -> None:
    store = await switchable(records_url)
    writer = RecordWriter(store, batch_size=100)
    for n in range(25):  # 25 calls x 9 records, queued before the writer runs: 225 records
        one_call(writer, n)
    writer.start()
    try:
        async with asyncio.timeout(30):
            await writer.flush()
    finally:
        await writer.aclose()
    try:
        assert store.batches == [100, 100, 25]
        assert (writer.written, writer.lost, writer.retried, writer.spooled) == (225, 0, 0, 0)
        for n in range(25):
            await assert_call_complete(store, n)
    finally:
        await store.aclose()


async def test_a_bad_record_in_a_batch_costs_only_itself(
    records_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = await CallStore.open(records_url)
    writer = RecordWriter(store)
    one_call(writer, 1)
    writer.turn(sid(99), speaker="caller", text="a call never started", started_at=at(0))
    one_call(writer, 2)
    with caplog.at_level(logging.WARNING, logger="voicefsm.records"):
        async with writer:
            await writer.flush()
    try:
        assert (writer.written, writer.lost) == (18, 1)
        await assert_call_complete(store, 1)
        await assert_call_complete(store, 2)
        assert "a turn record for call " + sid(99) + " was lost" in caplog.text
    finally:
        await store.aclose()


async def test_a_dead_database_spools_records_and_replays_them_in_order_when_it_answers(
    records_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await switchable(records_url)
    spool = tmp_path / "spool"
    writer = RecordWriter(
        store, spool_dir=spool, retries=2, retry_delay_s=0.001, probe_delay_s=0.01, probe_max_s=0.05
    )
    writer.start()
    try:
        with caplog.at_level(logging.WARNING, logger="voicefsm.records"):
            one_call(writer, 1)
            await writer.flush()
            assert writer.spooled == 0
            store.down = True
            one_call(writer, 2)
            async with asyncio.timeout(10):
                await writer.flush()  # out of memory: in the spool, on disk
            assert writer.spooled == 9
            assert writer.retried == 18  # the batch of 9, tried twice more
            one_call(writer, 3)  # while the spool holds records, new ones queue behind them there
            async with asyncio.timeout(10):
                await writer.flush()
            assert (writer.spooled, writer.spool_depth, writer.pending) == (18, 18, 0)
            assert list(spool.glob("*.jsonl"))
            on_disk = "".join(path.read_text() for path in spool.glob("*.jsonl"))
            assert "2: prompt 0" in on_disk

            store.answered.clear()
            store.down = False
            async with asyncio.timeout(10):
                await writer.settle()
        assert (writer.replayed, writer.lost, writer.spool_depth) == (18, 0, 0)
        assert writer.written == 27
        assert not list(spool.glob("*.jsonl"))  # replayed segments are deleted
        down = [r for r in caplog.records if "not answering" in r.getMessage()]
        assert len(down) == 1
        assert str(spool) in down[0].getMessage()
        assert any("answers again" in r.getMessage() for r in caplog.records)
        assert CALLER not in caplog.text
    finally:
        await writer.aclose()
    try:
        for n in (1, 2, 3):
            await assert_call_complete(store, n)
    finally:
        await store.aclose()


async def test_records_spooled_at_shutdown_are_replayed_by_the_next_start(
    records_url: str, tmp_path: Path
) -> None:
    store = await switchable(records_url)
    spool = tmp_path / "spool"
    store.down = True
    writer = RecordWriter(store, spool_dir=spool, retries=0, probe_delay_s=60)
    writer.start()
    one_call(writer, 1)
    one_call(writer, 2)
    async with asyncio.timeout(10):
        await writer.flush()
    one_call(writer, 3)  # still in memory when the writer stops: it goes to the spool too
    await writer.aclose(drain_timeout_s=0)
    assert (writer.lost, writer.spooled) == (0, 27)
    assert await store.get_call(sid(1)) is None

    store.down = False
    again = RecordWriter(store, spool_dir=spool)
    again.start()
    try:
        one_call(again, 4)  # a new call's records go behind the old ones
        async with asyncio.timeout(10):
            await again.settle()
        # The 27 left behind, then call 4's 9, which queued behind them in the spool (order holds).
        assert (again.replayed, again.lost, again.spool_depth, again.written) == (36, 0, 0, 36)
    finally:
        await again.aclose()
    try:
        for n in (1, 2, 3, 4):
            await assert_call_complete(store, n)
    finally:
        await store.aclose()


async def test_a_full_spool_loses_records_counted_and_warned_once_per_kind(
    records_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await switchable(records_url)
    store.down = True
    writer = RecordWriter(store, spool_dir=tmp_path / "spool", spool_max_bytes=3000, retries=0, batch_size=5)
    writer.start()
    try:
        with caplog.at_level(logging.WARNING, logger="voicefsm.records"):
            for n in range(10):
                one_call(writer, n)
            async with asyncio.timeout(10):
                await writer.flush()
        assert writer.spooled > 0
        assert writer.lost > 0
        assert writer.spooled + writer.lost == 90
        lost_turns = [r for r in caplog.records if "a turn record" in r.getMessage()]
        assert len(lost_turns) == 1
        assert "holds" in lost_turns[0].getMessage()  # says the spool is full, and its size
    finally:
        await writer.aclose(drain_timeout_s=0)
        await store.aclose()


def test_the_spool_resumes_where_replay_stopped_and_skips_a_line_cut_by_a_crash(tmp_path: Path) -> None:
    records = [("turn", sid(1), {"text": f"line {n}", "started_at": at(n)}) for n in range(5)]
    first = RecordSpool(tmp_path, max_bytes=1 << 20)
    assert first.open() == 0
    assert first.append(records) == 5
    batch, offset = first.peek(2)
    assert batch == records[:2]  # datetimes come back as datetimes
    first.consumed(2, offset)
    first.close()
    segment = next(tmp_path.glob("*.jsonl"))
    with segment.open("ab") as handle:
        handle.write(b'{"kind": "turn", "call_sid": "CA')  # a crash in the middle of a write

    second = RecordSpool(tmp_path, max_bytes=1 << 20)
    assert second.open() == 4  # three whole records left, and the cut one (not yet known to be cut)
    batch, offset = second.peek(10)
    assert batch == records[2:]
    assert second.unreadable == 1
    second.consumed(len(batch), offset)
    assert second.depth == 0
    assert not list(tmp_path.glob("*.jsonl"))
    second.close()


def test_a_segment_another_live_process_holds_is_left_to_it(tmp_path: Path) -> None:
    owner = RecordSpool(tmp_path, max_bytes=1 << 20)
    owner.open()
    owner.append([("state", sid(1), {"current_state": "a"})])
    other = RecordSpool(tmp_path, max_bytes=1 << 20)
    assert other.open() == 0  # locked by the owner: not an orphan
    other.close()
    owner.close()  # the owner stopped (or died): its segment is free
    heir = RecordSpool(tmp_path, max_bytes=1 << 20)
    assert heir.open() == 1
    heir.close()


def test_a_record_survives_the_json_line_round_trip() -> None:
    record = ("slot", sid(1), {"name": "when", "value": {"$at": "not a time", "n": [1, 2]}, "updated_at": T0})
    kind, call, arguments = decode_record(encode_record(record))
    assert (kind, call, arguments["updated_at"]) == ("slot", sid(1), T0)
    assert arguments["value"] == {"$at": "not a time", "n": [1, 2]}


async def test_records_piling_up_behind_a_failing_database_go_to_disk_without_waiting_out_the_retries(
    records_url: str, tmp_path: Path
) -> None:
    store = await switchable(records_url)
    store.down = True
    # Retries 30 s apart would let the queue overflow (and lose records) behind a dead database.
    writer = RecordWriter(
        store, spool_dir=tmp_path / "spool", max_queue=20, batch_size=5, retries=5, retry_delay_s=30
    )
    for n in range(15):
        writer.state(sid(1), f"s{n}")
    writer.start()
    try:
        async with asyncio.timeout(10):
            await writer.flush()
        assert (writer.spooled, writer.retried, writer.lost) == (15, 0, 0)
    finally:
        await writer.aclose(drain_timeout_s=0)
        await store.aclose()
