"""Alembic's environment for the call records.

voicefsm runs it on its own connection (``voicefsm.records.migrate``); run by the ``alembic`` command
(see alembic.ini here), it connects to ``-x db=URL`` (any URL ``--db`` accepts) with the async driver.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from voicefsm.records.dburl import database_url
from voicefsm.records.migrate import migration_options


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **migration_options())
    with context.begin_transaction():
        context.run_migrations()


async def _run_on(url: str) -> None:
    engine = create_async_engine(database_url(url))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def main() -> None:
    shared = context.config.attributes.get("connection")
    if shared is not None:
        _run(shared)
        return
    url = context.get_x_argument(as_dictionary=True).get("db", "sqlite:///voicefsm.db")
    if context.is_offline_mode():
        context.configure(url=database_url(url), literal_binds=True, **migration_options())
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_on(url))


main()
