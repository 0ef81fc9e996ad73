"""Database URLs as users type them, mapped to the async drivers the records run on.

``sqlite:///calls.db`` becomes ``sqlite+aiosqlite:///calls.db``; ``postgresql://...`` and the
``postgres://...`` that hosting platforms hand out become ``postgresql+asyncpg://...``. The explicit
async forms are accepted as they are. Anything else is refused with one line that names the setting
and shows a URL that works.
"""

from __future__ import annotations

import re

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from voicefsm.records.errors import DatabaseUrlError

#: The backend (as typed) -> the SQLAlchemy backend name and the async driver voicefsm runs it on.
ASYNC_DRIVERS: dict[str, tuple[str, str]] = {
    "sqlite": ("sqlite", "aiosqlite"),
    "postgresql": ("postgresql", "asyncpg"),
    "postgres": ("postgresql", "asyncpg"),
}

_PASSWORD = re.compile(r":[^:@/\s]*@")


def masked(raw: str) -> str:
    """``raw`` with the password of any ``user:password@`` part replaced by ``***``, safe to print."""
    return _PASSWORD.sub(":***@", raw)


def database_url(raw: str) -> URL:
    """The SQLAlchemy URL, on its async driver, for a ``--db`` / ``VOICEFSM_DB_URL`` value.

    Raises DatabaseUrlError (one line: what is wrong, which setting, an example) for anything that
    is not a SQLite or PostgreSQL URL, or names a driver that cannot run under asyncio.
    """
    text = raw.strip()
    try:
        url = make_url(text)
    except ArgumentError as error:
        raise DatabaseUrlError(masked(raw), "it is not a database URL") from error
    backend, _, driver = url.drivername.partition("+")
    if backend not in ASYNC_DRIVERS:
        raise DatabaseUrlError(
            url.render_as_string(hide_password=True),
            f"voicefsm keeps its records in SQLite or PostgreSQL, not {backend!r}",
        )
    name, async_driver = ASYNC_DRIVERS[backend]
    if driver and driver != async_driver:
        raise DatabaseUrlError(
            url.render_as_string(hide_password=True),
            f"its driver {driver} does not run under asyncio (voicefsm runs {name} on {async_driver})",
        )
    return url.set(drivername=f"{name}+{async_driver}")
