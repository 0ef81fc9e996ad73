"""One worker, driven as the API and Twilio drive it: pause, resume, cancel, windows, a CSV row reaching
the flow, the AMD verdict recorded, and slots released when a worker or a callback is lost."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fakes.twilio_rest_fake import ACCOUNT_SID, AUTH_TOKEN, Fault
from pydantic import SecretStr
from sqlalchemy import text
from twilio_calls import TwilioCalls

from voicefsm.campaigns.dialer import QUEUE
from voicefsm.campaigns.service import CampaignService, open_campaigns
from voicefsm.campaigns.store import Claimed
from voicefsm.server.app import create_app
from voicefsm.server.serving import running_server
from voicefsm.settings import Settings
from voicefsm.telephony.twilio.rest import TwilioRest

ALL_DAY = {"window_start": "00:00", "window_end": "00:00"}


@dataclass
class Rig:
    service: CampaignService
    http: httpx.AsyncClient
    twilio: TwilioCalls

    async def start(self, rows: list[str], **options: object) -> int:
        csv = "number,name\n" + "".join(f"{number},Person {index}\n" for index, number in enumerate(rows))
        body = {"flow": "Survey", "csv": csv, "source": "people.csv", "options": {**ALL_DAY, **options}}
        answer = await self.http.post("/api/campaigns", json=body)
        assert answer.status_code == 201, answer.text
        return int(answer.json()["id"])

    async def progress(self, campaign_id: int) -> dict[str, object]:
        answer = await self.http.get(f"/api/campaigns/{campaign_id}")
        assert answer.status_code == 200, answer.text
        body: dict[str, object] = answer.json()
        return body

    async def wait_ended(self, count: int, within_s: float = 10.0) -> None:
        def enough() -> bool:
            return len(self.twilio.ended) >= count

        def wait() -> bool:
            with self.twilio.all_ended:
                return self.twilio.all_ended.wait_for(enough, within_s)

        assert await asyncio.to_thread(wait), f"{len(self.twilio.ended)} calls ended, expected {count}"

    async def run_due_jobs(self) -> None:
        """Run the due jobs in a real procrastinate worker that returns once none is left."""
        await self.service.dialer.queue.run_worker_async(
            queues=[QUEUE], wait=False, install_signal_handlers=False, name="w-once"
        )

    async def contact_ids(self, campaign_id: int) -> list[int]:
        return [contact for contact, _ in await self.service.store.pending_contacts(campaign_id)]


@contextlib.asynccontextmanager
async def rig(url: str, *, worker: bool, duration_s: float = 0.05, **twilio: object) -> AsyncIterator[Rig]:
    calls = TwilioCalls(duration_s=duration_s, **twilio)  # type: ignore[arg-type]
    with calls:
        rest = TwilioRest(ACCOUNT_SID, AUTH_TOKEN, "+15550009999", api_base=calls.base_url)
        async with open_campaigns(url, rest, "http://placeholder", worker="w1") as service:
            app = create_app(Settings().model_copy(update={"twilio_auth_token": None}), campaigns=service)
            async with running_server(app) as server, httpx.AsyncClient(base_url=server.http_url) as http:
                service.dialer.public_base = server.http_url
                if worker:
                    service.start_worker(concurrency=4)
                yield Rig(service, http, calls)


async def test_pause_stops_new_calls_and_resume_dials_the_rest(postgres_url: str) -> None:
    numbers = [f"+1555300{index:04d}" for index in range(12)]
    async with rig(postgres_url, worker=True, duration_s=0.2) as r:
        campaign = await r.start(numbers, rate=50, max_concurrent=2)
        await r.wait_ended(2)
        assert (await r.http.post(f"/api/campaigns/{campaign}/pause")).json()["state"] == "paused"
        pending = await r.contact_ids(campaign)
        assert pending, "the campaign finished before it could be paused"
        created = len(r.twilio.created)
        # A dial job that comes due while paused leaves its number pending and places no call.
        assert await r.service.dialer.dial(pending[0]) == "paused"
        assert len(r.twilio.created) == created
        assert (await r.progress(campaign))["pending"] == len(pending)
        assert (await r.http.post(f"/api/campaigns/{campaign}/resume")).json()["state"] == "running"
        await r.wait_ended(12)
        progress = await r.progress(campaign)
    assert progress["state"] == "finished" and progress["outcomes"] == {"answered": 12}
    assert sorted(call.to for call in r.twilio.created) == numbers  # each number once


async def test_cancel_ends_every_number_not_yet_called_as_cancelled(postgres_url: str) -> None:
    async with rig(postgres_url, worker=False) as r:
        campaign = await r.start([f"+1555310{index:04d}" for index in range(5)])
        first = (await r.contact_ids(campaign))[0]
        assert (await r.http.post(f"/api/campaigns/{campaign}/cancel")).json()["outcomes"] == {"cancelled": 5}
        assert await r.service.dialer.dial(first) == "cancelled"
        answer = await r.http.post(f"/api/campaigns/{campaign}/resume")
        assert answer.status_code == 409 and "was cancelled; start a new one" in answer.json()["detail"]
        assert (await r.http.get("/api/campaigns/999")).status_code == 404
    assert r.twilio.created == []


async def test_outside_its_window_a_number_waits_in_the_queue_until_the_window_opens(
    postgres_url: str,
) -> None:
    now = dt.datetime.now(dt.UTC)
    opens, closes = now + dt.timedelta(hours=2), now + dt.timedelta(hours=3)
    window = {"window_start": f"{opens:%H:%M}", "window_end": f"{closes:%H:%M}"}
    async with rig(postgres_url, worker=False) as r:
        campaign = await r.start(["+15553200001"], **window)
        contact = (await r.contact_ids(campaign))[0]
        await r.run_due_jobs()
        async with r.service.store.engine.connect() as connection:
            jobs = (
                await connection.execute(
                    text(
                        "SELECT status, scheduled_at FROM procrastinate_jobs WHERE args->>'contact_id' = :id"
                    ),
                    {"id": str(contact)},
                )
            ).all()
    assert ("todo", opens.replace(second=0, microsecond=0)) in [tuple(job) for job in jobs]
    assert r.twilio.created == []


async def test_a_bad_csv_is_refused_with_its_line(postgres_url: str) -> None:
    async with rig(postgres_url, worker=False) as r:
        body = {"flow": "Survey", "csv": "number\n+15551230001\nnot-a-number\n", "source": "people.csv"}
        answer = await r.http.post("/api/campaigns", json=body)
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("people.csv:3: 'not-a-number' is not an E.164 number")


async def test_the_row_reaches_the_flow_and_the_amd_verdict_is_recorded(postgres_url: str) -> None:
    async with rig(postgres_url, worker=False, answered_by={"+15553300001": "machine_end_beep"}) as r:
        campaign = await r.start(["+15553300001"], max_attempts=1)
        contact = (await r.contact_ids(campaign))[0]
        assert await r.service.dialer.dial(contact) == "placed"
        created = r.twilio.requests[-1]
        twiml = created.value("Twiml") or ""
        assert created.value("MachineDetection") == "DetectMessageEnd" and created.value("AsyncAmd") == "true"
        assert created.value("AsyncAmdStatusCallback") == created.value("StatusCallback")
        # Twilio runs the TwiML: the voice webhook answers with the stream and the row's values.
        webhook = twiml.split('<Redirect method="POST">')[1].split("</Redirect>")[0].replace("&amp;", "&")
        path = webhook.removeprefix(str(r.http.base_url).rstrip("/"))
        answer = await r.http.post(path, data={"CallSid": r.twilio.created[0].sid, "From": "+15550009999"})
        assert '<Parameter name="name" value="Person 0"' in answer.text
        assert f'<Parameter name="campaign" value="{campaign}"' in answer.text
        await r.wait_ended(1)
        progress = await r.progress(campaign)
        async with r.service.store.engine.connect() as connection:
            verdict = await connection.scalar(text("SELECT answered_by FROM voicefsm_campaign_attempts"))
    assert progress["outcomes"] == {"machine": 1}
    assert verdict == "machine_end_beep"


async def test_a_slot_whose_worker_died_before_dialing_is_released_and_the_number_retried(
    postgres_url: str,
) -> None:
    async with rig(postgres_url, worker=False) as r:
        campaign = await r.start(["+15553400001"], max_concurrent=1, retry_backoff_s=0)
        contact = (await r.contact_ids(campaign))[0]
        claimed = await r.service.store.claim(contact, "a worker that then dies")
        assert isinstance(claimed, Claimed)
        assert (await r.progress(campaign))["dialing"] == 1
        assert await r.service.dialer.sweep() == 0  # its worker may still be waiting for its turn
        async with r.service.store.engine.begin() as connection:  # three minutes later
            await connection.execute(
                text("UPDATE voicefsm_campaign_attempts SET placed_at = now() - interval '3 min'")
            )
        assert await r.service.dialer.sweep() == 1
        assert (await r.progress(campaign))["pending"] == 1
        assert await r.service.dialer.dial(contact) == "placed"  # the slot is free again


@pytest.fixture(autouse=True)
def _no_env_twilio(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TWILIO_AUTH_TOKEN", "TWILIO_AUTH_TOKEN_SECONDARY", "VOICEFSM_PUBLIC_URL", "PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)


async def test_a_callback_twice_ends_the_attempt_once_and_an_unsigned_one_is_refused(
    postgres_url: str,
) -> None:
    async with rig(postgres_url, worker=False, duration_s=30.0) as r:
        campaign = await r.start(["+15553500001"], max_concurrent=1)
        contact = (await r.contact_ids(campaign))[0]
        assert await r.service.dialer.dial(contact) == "placed"
        sid = r.twilio.created[0].sid
        async with r.service.store.engine.connect() as connection:
            attempt = await connection.scalar(text("SELECT id FROM voicefsm_campaign_attempts"))
        for _ in range(2):  # Twilio may deliver a callback more than once
            answer = await r.http.post(
                f"/twilio/campaign/{attempt}", data={"CallSid": sid, "CallStatus": "busy"}
            )
            assert answer.status_code == 204
        async with r.service.store.engine.connect() as connection:
            active = await connection.scalar(text("SELECT active FROM voicefsm_campaigns"))
        progress = await r.progress(campaign)
        assert active == 0 and progress["pending"] == 1 and progress["attempts"] == 1
        signed = create_app(
            Settings().model_copy(update={"twilio_auth_token": SecretStr(AUTH_TOKEN)}), campaigns=r.service
        )
        async with running_server(signed) as server, httpx.AsyncClient(base_url=server.http_url) as http:
            answer = await http.post(
                f"/twilio/campaign/{attempt}", data={"CallSid": sid, "CallStatus": "completed"}
            )
        assert answer.status_code == 403


async def test_a_worker_stopping_before_the_call_gives_the_slot_and_the_number_back(
    postgres_url: str,
) -> None:
    async with rig(postgres_url, worker=False, duration_s=30.0) as r:
        campaign = await r.start(["+15553600001", "+15553600002"], rate=0.01, max_concurrent=2)
        first, second = await r.contact_ids(campaign)
        assert await r.service.dialer.dial(first) == "placed"  # the next call may start in 100 s
        store = r.service.store
        async with (
            store.engine.begin() as connection
        ):  # the next job's pacing slot is now: only its turn waits
            await connection.execute(text("UPDATE voicefsm_campaigns SET next_dial_at = now()"))
        waiting = asyncio.Event()
        take_turn = store.take_dial_turn

        async def take_turn_and_tell(campaign_id: int, attempt_id: int) -> float:
            waited = await take_turn(campaign_id, attempt_id)
            if waited > 0:
                waiting.set()
            return waited

        store.take_dial_turn = take_turn_and_tell  # type: ignore[method-assign]
        job = asyncio.create_task(r.service.dialer.dial(second))
        async with asyncio.timeout(10):
            await waiting.wait()
        assert (await r.progress(campaign))["dialing"] == 2
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        progress = await r.progress(campaign)
        async with store.engine.connect() as connection:
            active = await connection.scalar(text("SELECT active FROM voicefsm_campaigns"))
    assert (progress["dialing"], progress["pending"], progress["attempts"], active) == (1, 1, 1, 1)
    assert len(r.twilio.created) == 1


async def test_a_refused_create_is_retried_and_one_that_may_have_gone_through_is_not_redialed_blind(
    postgres_url: str,
) -> None:
    async with rig(postgres_url, worker=False, duration_s=30.0) as r:
        campaign = await r.start(["+15553700001", "+15553700002"], max_concurrent=2, retry_backoff_s=0)
        refused, doubtful = await r.contact_ids(campaign)
        r.twilio.fail_next(Fault(400, 21211, "The 'To' number is not a valid phone number"))
        assert await r.service.dialer.dial(refused) == "failed"
        r.twilio.fail_next(Fault.server_error())
        assert await r.service.dialer.dial(doubtful) == "unknown"
        progress = await r.progress(campaign)
        assert (progress["pending"], progress["dialing"]) == (1, 1)  # refused: to retry; doubtful: held
        assert await r.service.dialer.sweep() == 0  # its callbacks may still come
        async with r.service.store.engine.connect() as connection:
            attempt = await connection.scalar(
                text("SELECT id FROM voicefsm_campaign_attempts WHERE error LIKE '%HTTP 500%'")
            )
        # Twilio did create it after all: its first callback names the call, and its end settles it.
        sid = "CA" + "7" * 32
        for status in ("initiated", "completed"):
            answer = await r.http.post(
                f"/twilio/campaign/{attempt}", data={"CallSid": sid, "CallStatus": status}
            )
            assert answer.status_code == 204
        progress = await r.progress(campaign)
        async with r.service.store.engine.connect() as connection:
            call_sid = await connection.scalar(
                text("SELECT call_sid FROM voicefsm_campaign_attempts WHERE id = :id"), {"id": attempt}
            )
    assert call_sid == sid
    assert progress["outcomes"] == {"answered": 1} and progress["pending"] == 1
    assert len(r.twilio.created) == 0  # neither create succeeded at the stand-in, and nothing was redialed
