"""A campaign of 200 numbers dialed by two workers against the Twilio REST stand-in.

The two workers are two campaign services in this process, each with its own database connections
(a SQLAlchemy pool and a procrastinate psycopg pool) and its own procrastinate worker task, each behind
its own HTTP server; the stand-in delivers Twilio's callbacks round robin to both, as a load balancer
would. Cap and pacing hold only because they are kept in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from fakes.twilio_rest_fake import ACCOUNT_SID, AUTH_TOKEN
from sqlalchemy import select
from twilio_calls import TwilioCalls

from voicefsm.campaigns.contacts import Contact
from voicefsm.campaigns.service import CampaignService, open_campaigns
from voicefsm.campaigns.store import CampaignOptions
from voicefsm.campaigns.tables import AttemptRow, ContactRow
from voicefsm.server.app import create_app
from voicefsm.server.serving import running_server
from voicefsm.settings import Settings
from voicefsm.telephony.twilio.rest import TwilioRest

NUMBERS = [f"+1555100{index:04d}" for index in range(200)]
BUSY_ONCE = NUMBERS[10:30]  # busy, then answered on the retry
ALWAYS_BUSY = NUMBERS[40:42]  # busy on every attempt: outcome busy after max_attempts
MACHINES = NUMBERS[50:53]  # answered by a machine (async AMD)
RATE = 20.0
CAP = 8
MAX_ATTEMPTS = 3
EXPECTED_CALLS = 200 + len(BUSY_ONCE) + len(ALWAYS_BUSY) * (MAX_ATTEMPTS - 1)


@contextlib.asynccontextmanager
async def worker(url: str, name: str, twilio: TwilioCalls) -> AsyncIterator[tuple[CampaignService, str]]:
    """One worker: its own connections, queue worker and HTTP server (Twilio's callbacks land there)."""
    rest = TwilioRest(ACCOUNT_SID, AUTH_TOKEN, "+15550009999", api_base=twilio.base_url)
    async with open_campaigns(url, rest, "http://placeholder", worker=name) as service:
        app = create_app(Settings().model_copy(update={"twilio_auth_token": None}), campaigns=service)
        async with running_server(app) as server:
            service.dialer.public_base = server.http_url
            service.start_worker(concurrency=10)
            yield service, server.http_url


async def test_two_workers_respect_rate_and_cap_retry_busy_and_end_each_number_once(
    postgres_url: str,
) -> None:
    script = {number: ["busy"] for number in BUSY_ONCE} | {number: ["busy"] * 3 for number in ALWAYS_BUSY}
    twilio = TwilioCalls(
        duration_s=0.12, script=script, answered_by=dict.fromkeys(MACHINES, "machine_end_beep")
    )
    with twilio:
        async with (
            worker(postgres_url, "w1", twilio) as (first, url1),
            worker(postgres_url, "w2", twilio) as (
                _second,
                url2,
            ),
        ):
            twilio.deliver_to = [url1, url2]
            options = CampaignOptions(
                rate=RATE,
                max_concurrent=CAP,
                max_attempts=MAX_ATTEMPTS,
                retry_backoff_s=0.2,
                window_start="00:00",
                window_end="00:00",
            )
            contacts = [
                Contact(row, number, None, {"name": f"caller {row}", "day": "2024-06-05", "time": "09:30"})
                for row, number in enumerate(NUMBERS, 2)
            ]
            campaign_id = await first.start("reminders", "Reminder", options, contacts)

            def every_call_ended() -> bool:
                return len(twilio.created) >= EXPECTED_CALLS and len(twilio.ended) >= EXPECTED_CALLS

            ended = await asyncio.to_thread(
                _wait_for, twilio, every_call_ended, 180.0
            )  # a bound, not a pace: loaded hosts are slow
            assert ended, (
                f"{len(twilio.created)} calls created, {len(twilio.ended)} ended of {EXPECTED_CALLS}"
            )
            progress = await first.progress(campaign_id)
            sessions = first.store._sessions
            async with sessions() as session:
                contacts_rows = list(await session.scalars(select(ContactRow)))
                attempts = list(await session.scalars(select(AttemptRow)))

    assert not twilio.callback_errors
    # Exactly one outcome per number, and no number called again once it had one.
    assert len(contacts_rows) == 200 and {row.state for row in contacts_rows} == {"done"}
    outcome = {row.number: row.outcome for row in contacts_rows}
    assert all(outcome[number] == "answered" for number in BUSY_ONCE)
    assert all(outcome[number] == "busy" for number in ALWAYS_BUSY)
    assert all(outcome[number] == "machine" for number in MACHINES)
    assert Counter(outcome.values()) == {"answered": 200 - 5, "busy": 2, "machine": 3}
    calls_per_number = Counter(call.to for call in twilio.created)
    assert len(twilio.created) == EXPECTED_CALLS
    assert all(calls_per_number[number] == 2 for number in BUSY_ONCE)
    assert all(calls_per_number[number] == MAX_ATTEMPTS for number in ALWAYS_BUSY)
    assert progress.as_json()["outcomes"] == {"answered": 195, "busy": 2, "machine": 3}
    assert progress.finished and progress.attempts == EXPECTED_CALLS
    # Both workers dialed; the cap held across them.
    assert {attempt.worker for attempt in attempts} == {"w1", "w2"}
    assert 1 < twilio.max_live <= CAP
    # Async AMD was asked for on every call, and the verdict recorded.
    assert {call.machine_detection for call in twilio.created} == {"DetectMessageEnd"}
    assert {row.answered_by for row in contacts_rows if row.number in MACHINES} == {"machine_end_beep"}
    # Pacing, as decided (the database's clock): no two calls were asked for less than 1/RATE apart.
    asked = sorted(attempt.placed_at.timestamp() for attempt in attempts)
    closest = min(later - earlier for earlier, later in itertools.pairwise(asked))
    assert closest >= 1 / RATE - 0.001, closest
    # And as Twilio saw them (HTTP jitter on a busy host may bunch two): no second much above RATE.
    times = sorted(call.at for call in twilio.created)
    per_window = max(sum(1 for t in times[i:] if t - start < 1.0) for i, start in enumerate(times))
    assert per_window <= RATE + 2, per_window
    mean_interval = (times[-1] - times[0]) / (len(times) - 1)
    assert mean_interval >= 0.95 / RATE, mean_interval
    print(
        f"pacing: closest {closest * 1000:.1f} ms, mean {mean_interval * 1000:.1f} ms "
        f"(target {1000 / RATE:.1f}), busiest second at Twilio {per_window}"
    )


def _wait_for(twilio: TwilioCalls, predicate: object, timeout: float) -> bool:
    with twilio.all_ended:
        return bool(twilio.all_ended.wait_for(predicate, timeout))  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_env_twilio(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TWILIO_AUTH_TOKEN", "TWILIO_AUTH_TOKEN_SECONDARY", "VOICEFSM_PUBLIC_URL", "PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
