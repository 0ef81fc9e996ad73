"""Alembic's environment for the campaign tables: run by :func:`voicefsm.campaigns.schema.prepare_campaigns`
on its own (locked) connection, which it passes as ``config.attributes["connection"]``."""

from __future__ import annotations

from alembic import context

from voicefsm.campaigns.schema import migration_options

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit(
        "the campaign tables are created and upgraded by voicefsm itself, when a server opens its "
        "campaigns (one process at a time, under a lock), not by the alembic command"
    )
context.configure(connection=connection, **migration_options())
with context.begin_transaction():
    context.run_migrations()
