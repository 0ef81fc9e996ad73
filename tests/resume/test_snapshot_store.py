"""The snapshots table and its keeper, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest

from voicefsm.records import CallStore
from voicefsm.records.snapshots import SnapshotStore, SnapshotWrite
from voicefsm.runtime.snapshot import FlowSnapshot, SnapshotError, SnapshotKeeper

CALL = "CA" + "7" * 32


@pytest.fixture
async def store(records_url: str) -> AsyncIterator[CallStore]:
    opened = await CallStore.open(records_url)
    try:
        yield opened
    finally:
        await opened.aclose()


def snapshot(state: str, *, generation: int = 0, seq: int = 1) -> FlowSnapshot:
    return FlowSnapshot(CALL, "Pizza", "f" * 16, state, {"size": "large"}, generation=generation, seq=seq)


async def test_only_a_newer_snapshot_replaces_the_stored_one(store: CallStore) -> None:
    snapshots = SnapshotStore.of(store)
    save = snapshots.save
    assert await save(CALL, generation=0, seq=2, flow="Pizza", state="ask_crust", body="b2")
    assert not await save(CALL, generation=0, seq=1, flow="Pizza", state="ask_size", body="b1")  # late
    assert await save(CALL, generation=1, seq=1, flow="Pizza", state="ask_crust", body="r1")  # resumed
    assert not await save(CALL, generation=0, seq=3, flow="Pizza", state="done", body="b3")  # lost stream's
    stored = await snapshots.load(CALL)
    assert stored is not None and (stored.generation, stored.seq, stored.body) == (1, 1, "r1")
    assert not await snapshots.delete(CALL, generation=0)  # the lost stream cannot delete the resumed one's
    assert await snapshots.delete(CALL, generation=1)
    assert await snapshots.load(CALL) is None


async def test_old_snapshots_are_purged(store: CallStore) -> None:
    snapshots = SnapshotStore.of(store)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=5)
    await snapshots.save(CALL, generation=0, seq=1, flow="Pizza", state="ask_size", body="{}", at=long_ago)
    assert await snapshots.purge(dt.datetime.now(dt.UTC) - dt.timedelta(hours=4)) == 1
    assert await snapshots.load(CALL) is None


async def test_the_keeper_writes_the_newest_says_what_the_webhook_does_and_reopens_the_record(
    store: CallStore,
) -> None:
    async with SnapshotKeeper(SnapshotStore.of(store)) as keeper:
        assert await keeper.verdict(CALL) == "new"
        keeper.save(snapshot("ask_size", seq=1))
        keeper.save(snapshot("ask_crust", seq=2))
        assert await keeper.verdict(CALL) == "resume"  # waiting or written: either way it resumes
        await keeper.flush()
        loaded = await keeper.load(CALL)
        assert loaded is not None and (loaded.state, loaded.slots) == ("ask_crust", {"size": "large"})

        await store.call_started(CALL, flow="Pizza", caller=None)
        await store.call_ended(CALL, outcome="hung_up")
        assert await keeper.reopen_call(CALL)
        record = await store.get_call(CALL)
        assert record is not None and (record.ended_at, record.outcome) == (None, None)

        keeper.delete(CALL, 0)
        assert await keeper.verdict(CALL) == "ended"
        await keeper.flush()
        assert await keeper.verdict(CALL) == "ended"  # the call has a record and no snapshot
        assert await keeper.load(CALL) is None
    assert keeper.written == 2 and keeper.dropped == 0  # the two saves, made back to back, were one write


async def test_a_body_this_voicefsm_did_not_write_is_refused_with_the_reason(store: CallStore) -> None:
    await SnapshotStore.of(store).save(CALL, generation=0, seq=1, flow="Pizza", state="x", body='{"v": 99}')
    async with SnapshotKeeper(SnapshotStore.of(store)) as keeper:
        with pytest.raises(SnapshotError, match="format version 1"):
            await keeper.load(CALL)


async def test_erasing_a_call_erases_its_snapshot_too(store: CallStore) -> None:
    await store.call_started(CALL, flow="Pizza", caller="+15550001234")
    snapshots = SnapshotStore.of(store)
    await snapshots.save(CALL, generation=0, seq=1, flow="Pizza", state="ask_size", body="{}")
    assert await store.delete_call(CALL)
    assert await snapshots.load(CALL) is None  # it holds the caller's number and answers


async def test_closing_the_keeper_writes_what_waits_and_a_batch_holds_many_calls(store: CallStore) -> None:
    others = [f"CA{index:032d}" for index in range(3)]
    keeper = SnapshotKeeper(SnapshotStore.of(store))
    keeper.start()
    for call_sid in others:  # three calls' snapshots waiting together
        keeper.save(FlowSnapshot(call_sid, "Pizza", "f" * 16, "ask_size", {}, generation=0, seq=1))
    await keeper.aclose()
    assert keeper.written == 3 and keeper.dropped == 0
    for call_sid in others:
        stored = await SnapshotStore.of(store).load(call_sid)
        assert stored is not None and stored.state == "ask_size"


async def test_one_batch_applies_its_changes_in_order_for_new_and_stored_rows(store: CallStore) -> None:
    snapshots = SnapshotStore.of(store)
    stored, gone, fresh = (f"CA{index:032d}" for index in (7, 8, 9))
    assert await snapshots.save(stored, generation=0, seq=1, flow="Pizza", state="ask_size", body="s1")
    assert await snapshots.save(gone, generation=0, seq=1, flow="Pizza", state="ask_size", body="g1")

    def change(sid: str, seq: int, body: str | None = "x", generation: int = 0) -> SnapshotWrite:
        return SnapshotWrite(sid, generation, seq, "Pizza", "ask_crust", body)

    done = await snapshots.write(
        [
            change(stored, 2, "s2"),
            change(stored, 1, "late"),  # older than what this batch wrote before it
            change(gone, 0, None),  # a deletion of the stored row
            change(gone, 2, "g2"),  # ... then a new snapshot of the same call
            change(gone, 0, None, generation=-1),  # a deletion of an older generation: kept
            change(fresh, 1, "f1"),
            change(fresh, 0, None),  # a new row deleted in the same batch: never written
        ]
    )
    assert done == [True, False, True, True, False, True, True]
    found = {sid: await snapshots.load(sid) for sid in (stored, gone, fresh)}
    assert found[stored] is not None and (found[stored].seq, found[stored].body) == (2, "s2")
    assert found[gone] is not None and (found[gone].seq, found[gone].body) == (2, "g2")
    assert found[fresh] is None
