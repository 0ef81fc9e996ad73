"""Fault matrix, scale (reliability.md §4): a worker killed mid-call (47).

Two served workers share one PostgreSQL. Worker W is SIGKILLed in the middle of a call (no drain,
no last write) and started again under its name: every turn of that call spoken or heard before the
kill is in the database, and W's restart marks that call, and only that call, ``abandoned``. A call
W finished before stays completed; a call live on the other worker V meanwhile is untouched and
completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

from scale.standin import CallTrace, TwilioStandIn, Worker, poll, served_worker, served_workers

from voicefsm.records import CallRecord, CallStore

LEASE_S = 30.0  # the default: W's restart, not a lapsed lease, recovers its call
DONE, CUT, LIVE = (f"CA{n:032d}" for n in (47001, 47002, 47003))
ANSWERS = {"ask_size": "2", "ask_crust": "1"}
RECOVERED = re.compile(
    r"marked (\d+) call\(s\) abandoned, left unfinished by an earlier run of (\S+) .*: (.*)"
)


async def read(url: str, call_sid: str) -> CallRecord | None:
    store = await CallStore.open(url, migrate="check")
    try:
        return await store.get_call(call_sid)
    finally:
        await store.aclose()


async def test_fault_47_worker_sigkilled_mid_call_restarts_and_recovers_only_its_call(
    tmp_path: Path, postgres_url: str
) -> None:
    async with served_workers(tmp_path, ("w", "v"), postgres_url, lease_s=LEASE_S) as (w, v):
        standin = TwilioStandIn([w, v])
        held = {CUT: asyncio.Event(), LIVE: asyncio.Event()}
        release = {CUT: asyncio.Event(), LIVE: asyncio.Event()}

        async def gate(trace: CallTrace, question: str, worker: Worker) -> None:
            """Hold the cut and the live call at their second question until told."""
            if question == "ask_crust" and trace.call_sid in held and not release[trace.call_sid].is_set():
                held[trace.call_sid].set()
                await release[trace.call_sid].wait()

        done = await standin.call(DONE, v, w, ANSWERS)  # webhook on V, stream on W, to the end
        assert done.ended
        cut = asyncio.create_task(
            standin.call(CUT, v, w, ANSWERS, gate=gate, follow_redirect=lambda _: False)
        )
        live = asyncio.create_task(standin.call(LIVE, w, v, ANSWERS, gate=gate))
        try:
            async with asyncio.timeout(30):
                await held[CUT].wait()
                await held[LIVE].wait()
            # What the caller has heard and said on W so far is written as it happened, not at the end.
            before = await poll(
                lambda: read(postgres_url, CUT),
                lambda record: record is not None and len(record.transcript) == 4,
                "the cut call's four turns in the database",
                timeout_s=15,
            )
            w.kill()
            assert await w.served.exit_code(timeout_s=10) == -9
            release[CUT].set()
            trace = await cut
            assert [leg.close_code for leg in trace.legs] == [1006]

            async with served_worker(tmp_path / "w-again", "w", postgres_url, lease_s=LEASE_S) as again:
                after = await read(postgres_url, CUT)
                live_meanwhile = await read(postgres_url, LIVE)
                release[LIVE].set()
                assert (await live).ended
            stderr = again.served.stderr()
        finally:
            for task in (cut, live):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        finished = await read(postgres_url, DONE)
        lived = await read(postgres_url, LIVE)
        swept_by_v = v.served.stderr()

    assert before is not None and after is not None
    assert [(t.speaker, t.text) for t in before.transcript] == [
        ("agent", "Hi."),
        ("agent", "Size? 1 or 2."),
        ("caller", "2"),
        ("agent", "Crust? 1 or 2."),
    ]
    assert after.transcript == before.transcript  # every turn before the kill is kept
    assert (after.outcome, after.worker, after.final_state) == ("abandoned", "w", "ask_crust")
    assert after.slots == {"size": "large"}
    assert RECOVERED.findall(stderr) == [("1", "w", CUT)], stderr  # W's restart marked it: only it
    assert finished is not None and (finished.outcome, finished.worker) == ("completed", "w")
    assert live_meanwhile is not None and (live_meanwhile.outcome, live_meanwhile.worker) == (None, "v")
    assert lived is not None and (lived.outcome, lived.worker, lived.slots) == (
        "completed",
        "v",
        {"size": "large", "crust": "thin"},
    )
    assert "abandoned" not in swept_by_v  # V's lease sweeps found nothing: W's lease had not lapsed
