"""The dial job: one job per contact attempt, run by procrastinate workers (any number, on any host).

A job checks the callee's calling window (outside it: the job defers itself to the window's opening),
takes a slot under the campaign's shared concurrency cap (waiting for one while the cap is reached),
reserves its pacing slot, waits for it, and places the call with Twilio's status and async AMD
callbacks pointed at ``/twilio/campaign/{attempt}``. The slot is released when Twilio reports the
call's end; a busy, unanswered or failed call is deferred again with exponential backoff
(``retry_backoff_s * 2**(attempt-1)``) until ``max_attempts``. Every wait beyond a few seconds is
the queue's (``schedule_at``), not the job's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from procrastinate import App, PsycopgConnector
from procrastinate.exceptions import AlreadyEnqueued

from voicefsm.campaigns.store import CampaignStore, Claimed, Retry, utcnow
from voicefsm.campaigns.windows import CallingWindow
from voicefsm.core.actions import TelephonyActions
from voicefsm.errors import TelephonyError

log = logging.getLogger(__name__)

DIAL_TASK = "voicefsm.campaigns.dial"
SWEEP_TASK = "voicefsm.campaigns.sweep"
#: An attempt with no call after this lost its worker; with no end after this (Twilio ends calls at
#: 4 h), it lost its status callback. Either way its slot is released and the number retried.
UNPLACED_AFTER_S = 120.0
UNENDED_AFTER_S = 4 * 3600 + 600.0
QUEUE = "voicefsm_campaigns"
#: How often a job waiting for a slot under the cap looks again, and for how long before it re-queues.
SLOT_POLL_S = 0.1
SLOT_WAIT_S = 30.0
#: How soon a job that gave up waiting for a slot runs again.
REQUEUE_S = 1.0


def callback_url(base: str, attempt_id: int) -> str:
    """Where Twilio posts the status and AMD callbacks of one attempt (any worker can take them)."""
    return f"{base.rstrip('/')}/twilio/campaign/{attempt_id}"


def call_twiml(base: str, attempt_id: int) -> str:
    """What the answered call runs: the served flow's voice webhook, which knows the attempt's slot values."""
    url = f"{base.rstrip('/')}/twilio/voice?campaign_attempt={attempt_id}"
    return f'<Response><Redirect method="POST">{quoteattr(url)[1:-1]}</Redirect></Response>'


@dataclass(slots=True)
class Dialer:
    """Runs dial jobs for one worker: its store (connections), telephony, and the public URL of the server."""

    store: CampaignStore
    telephony: TelephonyActions
    public_base: str
    queue: App
    worker: str
    slot_poll_s: float = SLOT_POLL_S
    slot_wait_s: float = SLOT_WAIT_S

    async def defer(self, contact_id: int, at: dt.datetime | None = None) -> None:
        """Queue a dial of ``contact_id`` (at ``at``); a job already waiting for it is enough."""
        try:
            await self.queue.configure_task(
                DIAL_TASK,
                queue=QUEUE,
                schedule_at=at,
                queueing_lock=f"voicefsm-contact-{contact_id}",
            ).defer_async(contact_id=contact_id)
        except AlreadyEnqueued:
            log.debug("contact %d already has a dial job waiting", contact_id)

    async def retry(self, retry: Retry | None) -> None:
        if retry is not None:
            await self.defer(retry.contact_id, retry.at)

    async def dial(self, contact_id: int) -> str:
        """Run one dial job; returns what it did (for logs and tests)."""
        found = await self.store.contact_window(contact_id)
        if found is None:
            return "gone"
        state, start, end, zone, campaign_id = found
        if state != "running":
            return state  # paused: resume queues it again; cancelled: cancel finished it
        opening = CallingWindow.parse(start, end).next_open(utcnow(), zone)
        if opening is not None:
            await self.defer(contact_id, opening)
            return "window"
        wait_s = await self.store.reserve_pace(campaign_id)
        if wait_s > 0:
            await asyncio.sleep(wait_s)  # this job's place in the campaign's pace
        claimed = await self._claim(contact_id)
        if not isinstance(claimed, Claimed):
            return claimed
        try:
            while True:
                wait_s = await self.store.take_dial_turn(campaign_id, claimed.attempt_id)
                if wait_s <= 0:
                    break
                await asyncio.sleep(wait_s)  # the last call started less than 1/rate ago
        except asyncio.CancelledError:
            # The worker is stopping before the call was asked for: give the slot and the number back.
            await asyncio.shield(self.store.unclaim(claimed.attempt_id))
            raise
        try:
            placed = await self.telephony.place_call(
                claimed.number,
                call_twiml(self.public_base, claimed.attempt_id),
                status_callback=callback_url(self.public_base, claimed.attempt_id),
                machine_detection=claimed.machine_detection,
            )
        except TelephonyError as error:
            if error.status is not None and 400 <= error.status < 500 and error.status != 408:
                # Twilio refused it (429 included: "not processed"): no call exists; the retry policy applies.
                log.warning(
                    "campaign %d: attempt %d refused by Twilio: %s",
                    claimed.campaign_id,
                    claimed.attempt_id,
                    error,
                )
                await self.retry(await self.store.ended(claimed.attempt_id, "failed", error=str(error)))
                return "failed"
            # A timeout or a 5xx: the call may exist. No blind redial: the attempt stays open, so the
            # call's own callbacks (initiated...) settle it; without any, the sweep releases it after
            # UNPLACED_AFTER_S and the number is tried again.
            log.warning(
                "campaign %d: attempt %d may or may not have been placed: %s",
                claimed.campaign_id,
                claimed.attempt_id,
                error,
            )
            await self.store.note_error(claimed.attempt_id, str(error))
            return "unknown"
        await self.store.placed(claimed.attempt_id, placed.call_sid)
        return "placed"

    async def sweep(
        self, *, unplaced_after_s: float = UNPLACED_AFTER_S, unended_after_s: float = UNENDED_AFTER_S
    ) -> int:
        """Requeue dead workers' dial jobs, release slots whose calls will never report; returns how many."""
        stalled = list(await self.queue.job_manager.get_stalled_jobs(queue=QUEUE, task_name=DIAL_TASK))
        for job in stalled:
            await self.queue.job_manager.retry_job(job)
        retries = await self.store.expire_attempts(
            unplaced_after_s=unplaced_after_s, unended_after_s=unended_after_s
        )
        for retry in retries:
            await self.retry(retry)
        if stalled or retries:
            log.warning(
                "campaign sweep: %d dial job(s) of dead workers requeued, %d lost call(s) released",
                len(stalled),
                len(retries),
            )
        return len(stalled) + len(retries)

    async def _claim(self, contact_id: int) -> Claimed | str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.slot_wait_s
        while True:
            claimed = await self.store.claim(contact_id, self.worker)
            if isinstance(claimed, Claimed):
                return claimed
            if claimed.reason != "full":
                return claimed.reason
            if loop.time() >= deadline:
                await self.defer(contact_id, utcnow() + dt.timedelta(seconds=REQUEUE_S))
                return "requeued"
            await asyncio.sleep(self.slot_poll_s)  # the cap is reached: a call must end first


def queue_app(conninfo: str) -> App:
    """A procrastinate app on ``conninfo`` (a libpq URL), its dial task not yet bound to a dialer."""
    return App(connector=PsycopgConnector(conninfo=conninfo, min_size=1, max_size=10))


def bind_dial_task(app: App, dialer_of: DialerRef) -> None:
    """Register the dial task on ``app``; it runs ``dialer_of.dialer.dial``."""

    @app.task(name=DIAL_TASK, queue=QUEUE)
    async def dial(contact_id: int) -> None:
        dialer = dialer_of.dialer
        if dialer is None:  # pragma: no cover - the service binds it before any worker runs
            raise RuntimeError("the campaign dialer is not ready")
        done = await dialer.dial(contact_id)
        log.debug("dial job for contact %d: %s", contact_id, done)

    @app.periodic(cron="* * * * *", periodic_id="sweep")
    @app.task(name=SWEEP_TASK, queue=QUEUE, queueing_lock=SWEEP_TASK)
    async def sweep(timestamp: int) -> None:
        dialer = dialer_of.dialer
        if dialer is not None:
            await dialer.sweep()


@dataclass(slots=True)
class DialerRef:
    """The dialer a task runs with (set once the store, app and telephony are open)."""

    dialer: Dialer | None = None
