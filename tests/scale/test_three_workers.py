"""Three workers on one PostgreSQL, one SIGKILLed in the middle of 20 calls (issue 18, "Done when").

A Twilio stand-in (tests/scale/standin.py) posts each call's webhook to one worker and opens its
stream on another, as a load balancer would. All 20 calls answer the first question, then wait at
the second; worker B is killed with SIGKILL; then they all go on. The calls whose stream was on B
lose it: Twilio's <Redirect> reaches a live worker, which resumes them on a third from their
snapshot (at most the turn in flight lost), and they complete there. One caller hangs up during
the outage (no redirect): its call ends with a record that says why, ``abandoned``, marked by a
surviving worker once B's lease on it lapsed. No other call is ever marked abandoned.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from standin import CallTrace, TwilioStandIn, Worker, poll, served_workers

from voicefsm.records import CallStore

CALLS = 20
LEASE_S = 10.0
NAMES = ("worker-a", "worker-b", "worker-c")
HUNG_UP = 18  # a caller on B who hangs up during the outage
SWEPT = re.compile(r"marked \d+ call\(s\) abandoned, their worker gone \(.*?\): (.*)")


def sid(index: int) -> str:
    return f"CA{index:032d}"


def answers(index: int) -> dict[str, str]:
    return {"ask_size": "1" if index % 2 else "2", "ask_crust": "1" if index % 3 else "2"}


def slots(index: int) -> dict[str, str]:
    digits = answers(index)
    return {
        "size": "small" if digits["ask_size"] == "1" else "large",
        "crust": "thin" if digits["ask_crust"] == "1" else "thick",
    }


async def recorded_mid_way(url: str) -> None:
    """Wait (bounded) until every call's record says it reached its second question.

    Records are written as the call goes, through each worker's queue: under load they land a
    little after the caller hears the prompt, and a SIGKILL loses what is still queued.
    """
    store = await CallStore.open(url, migrate="check")
    try:
        await poll(
            lambda: store.list_calls(100),
            lambda calls: len(calls) == CALLS and all(c.current_state == "ask_crust" for c in calls),
            "every call's record to reach ask_crust",
            timeout_s=20,
        )
    finally:
        await store.aclose()


async def test_three_workers_one_killed_mid_calls_every_call_completes_elsewhere_or_says_why(
    tmp_path: Path, postgres_url: str
) -> None:
    async with served_workers(tmp_path, NAMES, postgres_url, lease_s=LEASE_S) as workers:
        a, b, c = workers
        standin = TwilioStandIn(workers)
        waiting: set[str] = set()
        all_waiting, go = asyncio.Event(), asyncio.Event()

        async def gate(trace: CallTrace, question: str, worker: Worker) -> None:
            """Hold every call at its second question until B has been killed."""
            if question != "ask_crust" or go.is_set():
                return
            waiting.add(trace.call_sid)
            if len(waiting) == CALLS:
                all_waiting.set()
            await go.wait()

        def still_there(trace: CallTrace) -> bool:
            return trace.call_sid != sid(HUNG_UP)

        routes = {i: (workers[i % 3], workers[(i + 1) % 3]) for i in range(CALLS)}
        calls = [
            asyncio.create_task(
                standin.call(sid(i), hook, stream, answers(i), gate=gate, follow_redirect=still_there),
                name=f"call-{i}",
            )
            for i, (hook, stream) in routes.items()
        ]
        try:
            async with asyncio.timeout(30):
                await all_waiting.wait()  # 20 calls live, each mid-way
            await recorded_mid_way(postgres_url)
            b.kill()
            assert await b.served.exit_code(timeout_s=10) == -9
            go.set()
            traces = {trace.call_sid: trace for trace in await asyncio.gather(*calls)}
        finally:
            for task in calls:
                task.cancel()
            await asyncio.gather(*calls, return_exceptions=True)

        on_b = {i for i, (_, stream) in routes.items() if stream is b}
        assert len(on_b) == 7 and HUNG_UP in on_b
        store = await CallStore.open(postgres_url, migrate="check")
        try:
            # The hung-up call ends once B's lease on it lapses: a surviving worker marks it.
            await poll(
                lambda: store.list_calls(100),
                lambda calls: any(c.call_sid == sid(HUNG_UP) and c.outcome for c in calls),
                f"call {HUNG_UP} to be marked abandoned by a surviving worker",
                timeout_s=LEASE_S * 3,
            )
            records = {i: await store.get_call(sid(i)) for i in range(CALLS)}
        finally:
            await store.aclose()

    for i, record in records.items():
        trace = traces[sid(i)]
        assert record is not None, i
        if i == HUNG_UP:
            assert (record.outcome, record.worker, record.final_state) == ("abandoned", b.name, "ask_crust")
            assert [leg.close_code for leg in trace.legs] == [1006] and not trace.ended
            continue
        assert (record.outcome, record.final_state, record.slots) == ("completed", "done", slots(i)), i
        assert trace.ended, i
        resumed = [step for step in record.path if step.event == "resumed"]
        if i in on_b:  # lost with B, resumed and completed on a live worker: the answer before is kept
            assert [leg.resumed for leg in trace.legs] == [False, True], trace
            assert trace.legs[0].close_code == 1006 and trace.legs[1].stream != b.name, trace
            assert record.worker == trace.legs[1].stream, (i, record.worker, trace)
            assert len(resumed) == 1, record.path
            # At most the turn in flight is lost: the size was asked once, the crust once per stream.
            assert trace.legs[1].heard in (["ask_crust"], ["ask_size", "ask_crust"]), trace
        else:
            assert [leg.stream for leg in trace.legs] == [routes[i][1].name], trace
            assert record.worker == routes[i][1].name and not resumed, (i, record.worker)
    # Nothing was ever marked abandoned but B's calls (not even for a moment), the hung-up one for good.
    swept = {s for w in (a, c) for line in SWEPT.findall(w.served.stderr()) for s in line.split(", ")}
    assert sid(HUNG_UP) in swept and swept <= {sid(i) for i in on_b}, swept
