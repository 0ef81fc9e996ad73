"""Workers sharing one records database: each call is leased to the worker running it, recovery
touches only a dead (or its own previous) worker's calls, and a stream ticket minted by one worker is
admitted by any other, once. On SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from voicefsm.core.events import CallStarted
from voicefsm.records import CallStore
from voicefsm.records.tables import StreamTicketRow
from voicefsm.server.leases import LeaseKeeper
from voicefsm.server.registry import Admission, CallRegistry, StreamRejected

UTC = dt.UTC
LEASE_S = 30.0
A, B = "host-a:8080", "host-b:8080"
CALLER = "+15550001111"


def sid(n: int) -> str:
    return f"CA{n:032d}"


@pytest.fixture
async def workers(records_url: str) -> AsyncIterator[tuple[CallStore, CallStore]]:
    """Two workers' stores on one database, as two hosts behind a load balancer have."""
    first = await CallStore.open(records_url)
    second = await CallStore.open(records_url)
    first.worker, second.worker = A, B
    first.lease_s = second.lease_s = LEASE_S
    try:
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()


async def outcome(store: CallStore, call_sid: str) -> tuple[str | None, str | None]:
    record = await store.get_call(call_sid)
    assert record is not None
    return record.outcome, record.worker


async def test_a_starting_worker_recovers_its_own_and_lapsed_calls_never_a_live_workers(
    workers: tuple[CallStore, CallStore],
) -> None:
    a, b = workers
    await a.call_started(sid(1), flow="f", caller=None)  # A's, live
    await b.call_started(sid(2), flow="f", caller=None)  # B's previous run's
    await b.call_started(sid(3), flow="f", caller=None)  # B's, ended properly
    await b.call_ended(sid(3), outcome="completed")

    assert await b.recover_abandoned() == 1  # B restarts under its name: its own unfinished call only

    assert await outcome(b, sid(1)) == (None, A)
    assert await outcome(b, sid(2)) == ("abandoned", B)
    assert await outcome(b, sid(3)) == ("completed", B)
    # A's lease is renewed while it runs; once it lapses (A died), any worker's sweep marks it.
    soon = dt.datetime.now(UTC) + dt.timedelta(seconds=LEASE_S / 2)
    assert await a.renew_leases([sid(1)], now=soon) == 1
    assert await b.recover_abandoned(soon + dt.timedelta(seconds=LEASE_S - 1), own=False) == 0
    assert await b.recover_abandoned(soon + dt.timedelta(seconds=LEASE_S + 1), own=False) == 1
    assert await outcome(b, sid(1)) == ("abandoned", A)


async def test_a_live_call_wrongly_guessed_abandoned_is_live_again_and_a_resumed_call_moves(
    workers: tuple[CallStore, CallStore],
) -> None:
    a, b = workers
    await a.call_started(sid(4), flow="f", caller=None)
    late = dt.datetime.now(UTC) + dt.timedelta(seconds=LEASE_S + 5)
    assert await b.recover_abandoned(late, own=False) == 1  # A was stuck longer than its lease

    assert await a.renew_leases([sid(4)]) == 1  # ... and is back: the guess gives way

    assert await outcome(a, sid(4)) == (None, A)
    # The call's stream comes back on B (resumed there): B now runs it and holds its lease.
    assert not await b.call_started(sid(4), flow="f", caller=None)
    assert await outcome(a, sid(4)) == (None, B)
    assert await a.renew_leases([sid(4)]) == 0  # A no longer renews what it does not run
    assert await a.recover_abandoned() == 0  # nor does A's restart touch it
    await b.call_ended(sid(4), outcome="completed")
    assert not await a.call_started(sid(4), flow="f", caller=None)  # an ended call stays B's, ended
    assert await outcome(a, sid(4)) == ("completed", B)


async def test_the_lease_keeper_renews_live_calls_and_sweeps_a_dead_workers(
    workers: tuple[CallStore, CallStore],
) -> None:
    a, b = workers
    a.lease_s = 3.0
    await a.call_started(sid(5), flow="f", caller=None)  # A dies: nobody renews it
    b.lease_s = 3.0
    await b.call_started(sid(6), flow="f", caller=None)  # B's live call
    b.lease_s = LEASE_S
    keeper = LeaseKeeper(b, lambda: [sid(6)])
    assert keeper.interval_s == LEASE_S / 3

    await keeper.tick()  # renews B's call for 30 s; A's has 3 s left
    assert (await outcome(b, sid(5)))[0] is None
    assert await b.recover_abandoned(dt.datetime.now(UTC) + dt.timedelta(seconds=3.5), own=False) == 1

    assert await outcome(b, sid(5)) == ("abandoned", A)
    assert await outcome(b, sid(6)) == (None, B)
    async with keeper:  # the task is owned: it stops with the block
        pass
    with pytest.raises(ValueError, match="worker name"):
        LeaseKeeper(CallStore(b.engine), list)


async def test_a_ticket_minted_by_one_worker_is_admitted_by_another_once(
    workers: tuple[CallStore, CallStore],
) -> None:
    a, b = workers
    on_a = CallRegistry(require_token=True, store=a)
    on_b = CallRegistry(require_token=True, store=b)
    token = await on_a.issue_token(sid(7), CALLER)
    assert await on_b.is_taken(sid(7))  # the browser phone cannot take its sid on any worker
    started = CallStarted(sid(7), "+1999", {"token": token})

    assert await on_b.admit(started) == Admission(sid(7), CALLER)

    for registry in (on_a, on_b):
        with pytest.raises(StreamRejected, match="unknown, used or expired token"):
            await registry.admit(started)
    other = await on_a.issue_token(sid(8), None)
    with pytest.raises(StreamRejected, match="minted for another call"):
        await on_b.admit(CallStarted(sid(9), None, {"token": other}))
    with pytest.raises(StreamRejected, match="unknown, used or expired token"):
        await on_b.admit(CallStarted(sid(9), None, {"token": "forged"}))


async def test_workers_racing_for_one_ticket_admit_exactly_one_stream(
    workers: tuple[CallStore, CallStore],
) -> None:
    a, b = workers
    registries = [CallRegistry(require_token=True, store=store) for store in (a, b, a, b)]
    token = await registries[0].issue_token(sid(10), CALLER)
    retried = await registries[1].issue_token(sid(10), CALLER)  # the webhook retried on another worker
    assert retried != token

    results = await asyncio.gather(
        *(
            registry.admit(CallStarted(sid(10), None, {"token": t}))
            for registry, t in zip(registries, (token, retried, token, retried), strict=True)
        ),
        return_exceptions=True,
    )

    admitted = [result for result in results if isinstance(result, Admission)]
    assert admitted == [Admission(sid(10), CALLER)], results
    assert all(isinstance(r, StreamRejected) for r in results if not isinstance(r, Admission)), results


async def test_an_expired_ticket_is_refused_and_swept(workers: tuple[CallStore, CallStore]) -> None:
    a, b = workers
    past = dt.datetime.now(UTC) - dt.timedelta(seconds=1)
    await a.add_ticket(sid(11), "0" * 64, caller=None, expires_at=past)

    used = await b.use_ticket(sid(11), "0" * 64)

    assert not used.admitted and not used.other_call
    await b.recover_abandoned(own=False)
    assert not await b.call_sid_taken(sid(11))
    assert (await b.use_ticket(sid(11), "0" * 64)).admitted is False


async def test_erasing_a_call_erases_its_stream_tickets_with_the_callers_number(
    workers: tuple[CallStore, CallStore],
) -> None:
    a, _ = workers
    registry = CallRegistry(require_token=True, store=a)
    await registry.issue_token(sid(12), CALLER)  # a retried webhook's ticket, never used
    token = await registry.issue_token(sid(12), CALLER)
    await registry.admit(CallStarted(sid(12), None, {"token": token}))
    await a.call_started(sid(12), flow="f", caller=CALLER)
    assert await a.call_sid_taken(sid(12))

    assert await a.delete_call(sid(12))

    async with a.engine.connect() as connection:
        left = await connection.scalar(
            select(func.count()).select_from(StreamTicketRow).where(StreamTicketRow.call_sid == sid(12))
        )
    assert left == 0
