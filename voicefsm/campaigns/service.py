"""One process's campaign service: the store, the queue app, the dialer, and (optionally) a worker.

The server opens one (:func:`open_campaigns`) and runs a worker in it: every ``voicefsm serve``
process is a campaign worker, and all of them share the database's cap and pacing. The API and the
``voicefsm campaign`` command go through :class:`CampaignService` as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from procrastinate.schema import SchemaManager
from sqlalchemy.engine import make_url

from voicefsm.campaigns.contacts import Contact
from voicefsm.campaigns.dialer import QUEUE, Dialer, DialerRef, bind_dial_task, queue_app
from voicefsm.campaigns.errors import CampaignError
from voicefsm.campaigns.store import TERMINAL, CampaignOptions, CampaignStore, Progress, worker_name
from voicefsm.core.actions import TelephonyActions
from voicefsm.records.dburl import database_url

log = logging.getLogger(__name__)

#: How often a worker looks for scheduled jobs (retries, windows) besides the queue's notifications.
POLL_S = 0.5


def libpq_url(url: str) -> str:
    """The libpq form (``postgresql://user:pw@host:port/db``) of a ``--db`` URL, for the queue's driver."""
    parsed = database_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise CampaignError(
            f"campaigns run on PostgreSQL (their queue engine, procrastinate, needs it), not on "
            f"{parsed.get_backend_name()}; pass --db postgresql://..., or run without a database URL to "
            "use an embedded PostgreSQL"
        )
    return (
        make_url(parsed.render_as_string(hide_password=False))
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )


@dataclass(slots=True)
class CampaignService:
    """Start, pause, resume and cancel campaigns; take Twilio's callbacks; run a worker."""

    store: CampaignStore
    dialer: Dialer
    _workers: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self, name: str, flow: str, options: CampaignOptions, contacts: Sequence[Contact]) -> int:
        """Create a running campaign and queue a dial job per number; returns its id."""
        campaign_id = await self.store.create(name, flow, options, contacts)
        await self._queue_pending(campaign_id)
        log.info("campaign %d (%s): %d numbers queued", campaign_id, flow, len(contacts))
        return campaign_id

    async def _queue_pending(self, campaign_id: int) -> None:
        for contact_id, at in await self.store.pending_contacts(campaign_id):
            await self.dialer.defer(contact_id, at)

    async def pause(self, campaign_id: int) -> None:
        """No new call starts (calls in progress go on); jobs that come due leave their number pending."""
        await self.store.set_state(campaign_id, "paused")

    async def resume(self, campaign_id: int) -> None:
        """Dial again: every pending number is queued (once)."""
        before = await self.store.set_state(campaign_id, "running")
        if before == "cancelled":
            raise CampaignError(f"campaign {campaign_id} was cancelled; start a new one to call its numbers")
        await self._queue_pending(campaign_id)

    async def cancel(self, campaign_id: int) -> None:
        """No new call starts; every pending number ends as ``cancelled`` (calls in progress go on)."""
        await self.store.set_state(campaign_id, "cancelled")

    async def progress(self, campaign_id: int) -> Progress:
        return await self.store.progress(campaign_id)

    async def campaigns(self) -> list[Progress]:
        return [await self.store.progress(campaign_id) for campaign_id in await self.store.campaign_ids()]

    async def callback(self, attempt_id: int, fields: Mapping[str, str]) -> None:
        """Twilio's status or AMD callback for one attempt (any worker takes it; repeats are harmless)."""
        call_sid = fields.get("CallSid")
        if call_sid:
            await self.store.call_seen(attempt_id, call_sid)
        answered_by = fields.get("AnsweredBy")
        if answered_by:
            await self.store.answered_by(attempt_id, answered_by)
        status = fields.get("CallStatus", "")
        if status in TERMINAL:
            retry = await self.store.ended(attempt_id, status, answered_by=answered_by or None)
            await self.dialer.retry(retry)

    async def call_parameters(self, attempt_id: int) -> dict[str, str]:
        """The custom parameters of an attempt's media stream: the CSV row's values (and the ids)."""
        return await self.store.call_parameters(attempt_id)

    def start_worker(self, *, concurrency: int = 8) -> asyncio.Task[None]:
        """Run a procrastinate worker for the dial jobs in the background; :meth:`stop_workers` ends it."""
        task = asyncio.create_task(
            self.dialer.queue.run_worker_async(
                queues=[QUEUE],
                name=self.dialer.worker,
                concurrency=concurrency,
                install_signal_handlers=False,
                fetch_job_polling_interval=POLL_S,
                abort_job_polling_interval=POLL_S,
                shutdown_graceful_timeout=5.0,
                delete_jobs="successful",
            ),
            name=f"campaign-worker {self.dialer.worker}",
        )
        self._workers.append(task)
        return task

    async def stop_workers(self) -> None:
        workers, self._workers = self._workers, []
        for task in workers:
            task.cancel()
        for task in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def open_campaigns(
    url: str,
    telephony: TelephonyActions,
    public_base: str,
    *,
    worker: str | None = None,
) -> AsyncIterator[CampaignService]:
    """A campaign service on PostgreSQL ``url`` with its own connections; closed (workers stopped) on exit."""
    conninfo = libpq_url(url)
    store = await CampaignStore.open(url, SchemaManager.get_schema())
    try:
        ref = DialerRef()
        app = queue_app(conninfo)
        bind_dial_task(app, ref)
        async with app.open_async():
            dialer = Dialer(store, telephony, public_base, app, worker or worker_name())
            ref.dialer = dialer
            service = CampaignService(store, dialer)
            try:
                yield service
            finally:
                await service.stop_workers()
    finally:
        await store.aclose()
