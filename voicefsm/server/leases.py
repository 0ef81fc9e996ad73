"""A worker's hold on its calls in a shared database: a lease, renewed while the call is live.

Every call a worker records carries its name (``calls.worker``) and a lease (``calls.lease_until``).
While the worker runs, one owned task renews the leases of its live calls every third of the lease,
and marks ``abandoned`` any unfinished call whose lease has lapsed: its worker died (or lost the
database) and nobody will end it. A worker's own calls from a previous run (same name) are marked at
its start. A live worker's calls are never touched: they are renewed long before they lapse.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Collection
from types import TracebackType

from voicefsm.records import CallStore
from voicefsm.settings import Settings

log = logging.getLogger(__name__)


def worker_name(settings: Settings) -> str:
    """This worker's name: ``VOICEFSM_WORKER_NAME``, else ``host:port`` (``host:pid-N`` on port 0).

    The default stays the same when the worker restarts on the same port, so the restarted worker
    recovers its predecessor's calls at once instead of waiting for their leases to lapse.
    """
    if settings.worker_name:
        return settings.worker_name
    host = socket.gethostname()
    return f"{host}:{settings.port}" if settings.port else f"{host}:pid-{os.getpid()}"


def listed(call_sids: list[str], most: int = 10) -> str:
    """Up to ``most`` CallSids for a log line, and how many more."""
    shown = ", ".join(call_sids[:most])
    return f"{shown} and {len(call_sids) - most} more" if len(call_sids) > most else shown


class LeaseKeeper:
    """Renews a worker's leases on the calls ``live()`` names, and sweeps lapsed ones (``async with``)."""

    def __init__(self, store: CallStore, live: Callable[[], Collection[str]]) -> None:
        if store.worker is None:
            raise ValueError("LeaseKeeper needs a store with a worker name (store.worker)")
        self.store = store
        self.live = live
        self.interval_s = store.lease_s / 3
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        #: Calls of dead workers this keeper marked abandoned.
        self.recovered = 0

    async def tick(self) -> None:
        """Renew this worker's live calls, then mark calls whose lease lapsed abandoned."""
        live = list(self.live())
        await self.store.renew_leases(live)
        swept = await self.store.abandon_calls(own=False)
        if swept:
            self.recovered += len(swept)
            log.warning(
                "marked %d call(s) abandoned, their worker gone (no lease renewal for %.0f s): %s",
                len(swept),
                self.store.lease_s,
                listed(swept),
            )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.tick()
            except Exception as error:  # the database is away: the calls go on; renew on the next tick
                if not self._failing:
                    log.warning(
                        "could not renew the leases of %s's calls (%s); retrying every %.0f s. Other "
                        "workers mark them abandoned if this lasts %.0f s",
                        self.store.worker,
                        type(error).__name__,
                        self.interval_s,
                        self.store.lease_s,
                    )
                self._failing = True
            else:
                if self._failing:
                    log.warning("leases of %s's calls renewed again", self.store.worker)
                self._failing = False

    async def __aenter__(self) -> LeaseKeeper:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="voicefsm-lease-keeper")
        return self

    async def __aexit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
