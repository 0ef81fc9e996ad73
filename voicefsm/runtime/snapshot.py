"""Flow snapshots: what a call's flow needs to go on after its media stream is lost, and where it is kept.

At every transition (and whenever an Ask starts listening again after a retry) the runtime takes a
:class:`FlowSnapshot`: the flow's name and fingerprint, its current state, its slots, its counters
(entries for the call limits, an Ask's no-input and no-match retries, time used), whether a Do step
was running, and the call's caller and parameters. It hands it to a :class:`SnapshotSink` without
waiting; the server's sink is a :class:`SnapshotKeeper`, whose one owned task writes the newest
snapshot of each call to the records database (``call_snapshots``), off the call's hot path.

When the stream closes without the flow ending (the socket dropped, the worker died or drained),
the snapshot stays. The TwiML after ``<Connect><Stream>`` redirects Twilio back to the voice
webhook, which finds the snapshot (:meth:`SnapshotKeeper.verdict`) and streams again with
``resume=1``; the session then builds the runtime with ``restore=`` the snapshot: the chart starts
in the saved state without running any entry code, the caller hears :data:`RESUME_APOLOGY` and the
state's question again. A flow that ends deletes its snapshot, so the redirect that follows a
normal end gets ``<Hangup/>``. See docs/guide/resume.md for exactly what is guaranteed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import itertools
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from voicefsm.flow.chart import VoiceFlow
from voicefsm.flow.spec import FlowSpec
from voicefsm.records import utcnow
from voicefsm.records.linger import Linger
from voicefsm.records.snapshots import SnapshotStore, SnapshotWrite

log = logging.getLogger(__name__)

#: The ``<Parameter>`` of a stream that resumes a call (``resume=1``).
RESUME_PARAMETER = "resume"
#: The event of the transition row a resume writes (``state --resumed--> state``).
RESUMED = "resumed"
#: What the caller hears before the question again; a flow may set ``resume_apology`` ("" for none).
RESUME_APOLOGY = "Sorry, we were cut off."
#: What the caller hears when a stream asks to resume a call that cannot be (snapshot gone or unusable).
CANNOT_RESUME = "Sorry, we were cut off and cannot continue this call. Please call again. Goodbye!"
#: How long a snapshot is kept after its last write: Twilio ends every call at 4 hours.
KEEP_S = 4 * 3600.0
#: How often each worker deletes the snapshots older than ``keep_s`` (and once when it starts).
PURGE_EVERY_S = 3600.0
#: Snapshots written in one transaction at most (each a different call's newest).
WRITE_BATCH = 100
#: Seconds the writer lets snapshots gather after the first one waiting (unless someone waits for them):
#: calls starting together share a transaction, and a call's quick transitions collapse into one write.
LINGER_S = 0.05
#: The body's format; a body of another version is not resumed.
BODY_VERSION = 1

Verdict = Literal["resume", "ended", "new"]

#: How the driver says the line was lost under the call (runtime/driver.py), not ended by anyone:
#: a socket closed without Twilio's ``stop``, a send that failed, an idle line, a server shutting down.
_LOST_EXACT = frozenset({"connection closed", "server shutdown"})
_LOST_PREFIXES = ("connection lost", "no media for ")


def line_lost(reason: str | None) -> bool:
    """True when ``reason`` (a call's disconnect reason) says the stream was lost, not hung up: Twilio
    then runs the TwiML after the stream, whose redirect may resume the call."""
    return reason is not None and (reason in _LOST_EXACT or reason.startswith(_LOST_PREFIXES))


class SnapshotError(ValueError):
    """A snapshot that cannot be read or restored; the message says why (no slot values in it)."""


@dataclass(frozen=True, slots=True)
class FlowSnapshot:
    """Everything a flow needs to go on in the state it was in, as JSON-able values."""

    call_sid: str
    flow: str
    fingerprint: str
    state: str
    slots: dict[str, Any]
    #: Built-in template values (``reason``, ``error``).
    builtins: dict[str, str] = field(default_factory=dict)
    #: The current Ask's retries so far, by failure (``no_input``, ``no_match``).
    failures: dict[str, int] = field(default_factory=dict)
    #: States entered (``max_state_entries``), the same state in a row (``max_same_state``), the last one.
    entries: int = 0
    same: int = 0
    last_entered: str | None = None
    limited: bool = False
    #: Seconds the call had lasted (``max_duration_s`` goes on counting from there).
    elapsed_s: float = 0.0
    stt_failed: str | None = None
    #: A Do step had started (it may have done its work): re-run on resume only when idempotent.
    step_running: bool = False
    caller: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    #: How many times the call has been resumed; ``seq`` counts snapshots within one generation.
    generation: int = 0
    seq: int = 0

    def to_json(self) -> str:
        """The stored body (compact JSON, with the format version)."""
        return json.dumps({"v": BODY_VERSION, **asdict(self)}, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FlowSnapshot:
        """Read a stored body; SnapshotError when it is not one this voicefsm wrote."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SnapshotError(f"the snapshot is not JSON ({exc})") from exc
        if not isinstance(data, dict) or data.pop("v", None) != BODY_VERSION:
            raise SnapshotError(f"the snapshot is not of format version {BODY_VERSION}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise SnapshotError(f"the snapshot's fields do not match this voicefsm ({exc})") from exc


class SnapshotSink(Protocol):
    """Where a runtime hands its snapshots; both methods return at once and never raise."""

    def save(self, snapshot: FlowSnapshot) -> None:
        """Keep ``snapshot`` as the call's newest."""

    def delete(self, call_sid: str, generation: int) -> None:
        """The call's flow has ended: forget its snapshot (up to ``generation``)."""


#: How long a flow that ended waits for its snapshot's deletion to be written before its stream
#: closes (Twilio's redirect then finds no snapshot, on any worker).
SETTLE_S = 2.0


@functools.lru_cache(maxsize=64)
def flow_fingerprint(flow: type[VoiceFlow]) -> str:
    """A short hash of the flow's shape: states, kinds, transitions, slots (not its prompts' wording).

    A snapshot is resumed by a flow with the same name; a different fingerprint (a deploy in
    between) is only logged, as long as the saved state still exists.
    """
    spec = FlowSpec.of(flow)
    shape = {
        "version": getattr(flow, "version", None),
        "states": sorted((state.id, state.kind) for state in spec.states),
        "transitions": sorted(
            (edge.source, edge.target or "", sorted(edge.events), sorted(edge.guards))
            for edge in spec.transitions
        ),
        "slots": spec.slots_schema,
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:16]


def slot_values(flow: VoiceFlow) -> dict[str, Any]:
    """The flow's slots as JSON values (computed fields left out: they follow from the others)."""
    slots = flow.slots
    computed = set(type(slots).model_computed_fields)
    values: dict[str, Any] = slots.model_dump(mode="json", exclude=computed)
    return values


def restored_flow(
    flow: type[VoiceFlow], snapshot: FlowSnapshot, *, resources: Mapping[str, object] | None = None
) -> VoiceFlow:
    """A new ``flow`` sitting in the snapshot's state with its slots, no entry code run.

    python-statemachine queues the initial state's entry only when the model has no state yet, so
    the model is given the saved state: ``activate_initial_state()`` then has nothing to do.
    Raises SnapshotError (naming the flow and state) when this flow cannot take the snapshot.
    """
    problem = resume_problem(flow, snapshot)
    if problem is not None:
        raise SnapshotError(problem)
    try:
        slots = flow.slots_model.model_validate(snapshot.slots)
    except ValueError as exc:
        raise SnapshotError(
            f"the slots saved for {flow.__name__} no longer validate ({type(exc).__name__})"
        ) from exc
    return flow(
        slots=slots,
        caller=snapshot.caller,
        parameters=snapshot.parameters,
        resources=resources,
        model=_SavedState(snapshot.state),
    )


class _SavedState:
    """The chart's model, already in a state (python-statemachine reads and writes ``state``)."""

    def __init__(self, state: str) -> None:
        self.state: str | None = state


def resume_problem(flow: type[VoiceFlow], snapshot: FlowSnapshot) -> str | None:
    """Why ``flow`` cannot resume ``snapshot`` (another flow, a state it no longer has), or None."""
    if snapshot.flow != flow.__name__:
        return f"the snapshot is of flow {snapshot.flow}, but this server runs {flow.__name__}"
    state = flow.states_map.get(snapshot.state)
    if state is None:
        return f"{flow.__name__} has no state {snapshot.state!r} any more (the flow changed since)"
    if state.final:
        return f"{flow.__name__} had already ended (in {snapshot.state})"
    if snapshot.fingerprint != flow_fingerprint(flow):
        log.info("resuming %s in %s although the flow changed since the snapshot", flow.__name__, state.id)
    return None


@dataclass(slots=True)
class _Pending:
    snapshot: FlowSnapshot | None  # None: delete
    call_sid: str
    generation: int


class SnapshotKeeper:
    """The server's :class:`SnapshotSink`: one owned task writes each call's newest snapshot.

    Snapshots waiting for the database are coalesced per call (only the newest is worth writing),
    so a slow database costs writes, never memory or the call's time. A write that fails is logged
    once and counted in ``dropped``; the next transition writes a newer one. Start it with
    ``async with SnapshotKeeper(store):`` (or :meth:`start` / :meth:`aclose`). The task also deletes
    snapshots older than ``keep_s``, when it starts and every :data:`PURGE_EVERY_S`.
    """

    def __init__(
        self,
        store: SnapshotStore,
        *,
        keep_s: float = KEEP_S,
        write_timeout_s: float = 5.0,
        drain_timeout_s: float = 5.0,
    ) -> None:
        self.store = store
        self.keep_s = keep_s
        self._write_timeout_s = write_timeout_s
        self._drain_timeout_s = drain_timeout_s
        self._pending: dict[str, _Pending] = {}
        self._inflight: dict[str, _Pending] = {}  # the batch being written, by call
        self._written_one = asyncio.Condition()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._linger = Linger(LINGER_S)
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._warned = False
        #: Snapshots (and deletions) written, and lost (the database refused them).
        self.written = 0
        self.dropped = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer task on the running loop; it first purges snapshots older than ``keep_s``."""
        if self._closed:
            raise RuntimeError("SnapshotKeeper.start() after aclose(): make a new SnapshotKeeper")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="voicefsm-snapshots")

    async def aclose(self) -> None:
        """Write what is waiting (for up to ``drain_timeout_s``), then stop the task."""
        if self._closed:
            return
        self._closed = True
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._drain_timeout_s):
                await self.flush()
        task, self._task = self._task, None
        task.cancel()
        await asyncio.wait({task})
        if self._pending:
            self.dropped += len(self._pending)
            log.warning("flow snapshots: %d were not written before shutdown", len(self._pending))
            self._pending.clear()

    async def __aenter__(self) -> SnapshotKeeper:
        self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def settled(self, call_sid: str) -> None:
        """Wait until nothing of ``call_sid``'s is waiting to be written (nor being written)."""
        with self._linger.hurried():
            async with self._written_one:
                await self._written_one.wait_for(
                    lambda: self._waiting(call_sid) is None or self._task is None or self._task.done()
                )

    async def flush(self) -> None:
        """Wait until nothing is waiting to be written (nor being written)."""
        with self._linger.hurried():
            while (self._pending or self._inflight) and self._task is not None and not self._task.done():
                self._idle.clear()
                await self._idle.wait()

    # -- the sink (never await, never raise) ----------------------------------------------------------

    def save(self, snapshot: FlowSnapshot) -> None:
        """Queue ``snapshot`` as its call's newest (replacing one still waiting)."""
        self._put(_Pending(snapshot, snapshot.call_sid, snapshot.generation))

    def delete(self, call_sid: str, generation: int) -> None:
        """Queue the deletion of the call's snapshot (the flow has ended)."""
        self._put(_Pending(None, call_sid, generation))

    def _put(self, item: _Pending) -> None:
        if self._closed:
            self.dropped += 1
            return
        self._pending.pop(item.call_sid, None)  # re-inserted last: calls are written in order of change
        self._pending[item.call_sid] = item
        self._wake.set()

    # -- reading (the webhook and the resumed session) ------------------------------------------------

    async def load(self, call_sid: str) -> FlowSnapshot | None:
        """The call's newest snapshot: one still waiting here first, else the database's; None if none.

        Raises SnapshotError when the stored one cannot be read.
        """
        waiting = self._waiting(call_sid)
        if waiting is not None:
            return waiting.snapshot
        stored = await self.store.load(call_sid)
        if stored is None:
            return None
        snapshot = FlowSnapshot.from_json(stored.body)
        if snapshot.call_sid != call_sid:
            raise SnapshotError(f"the snapshot stored for {call_sid} is another call's")
        return snapshot

    async def verdict(self, call_sid: str) -> Verdict:
        """What the voice webhook does for ``call_sid``: resume its flow, hang up (its flow has ended),
        or start a new call (voicefsm has never seen it)."""
        waiting = self._waiting(call_sid)
        if waiting is not None:
            return "ended" if waiting.snapshot is None else "resume"
        if await self.store.load(call_sid) is not None:
            return "resume"
        return "new" if await self.store.call_status(call_sid) == "unknown" else "ended"

    def _waiting(self, call_sid: str) -> _Pending | None:
        """The call's newest change not yet in the database, if any."""
        waiting = self._pending.get(call_sid)
        if waiting is None:
            waiting = self._inflight.get(call_sid)
        return waiting

    async def reopen_call(self, call_sid: str) -> bool:
        """The resumed call's record goes on: clear the end the lost stream wrote."""
        return await self.store.reopen_call(call_sid)

    # -- the writer task ------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        await self._purge()
        purge_at = loop.time() + PURGE_EVERY_S
        while True:
            if loop.time() >= purge_at:
                await self._purge()
                purge_at = loop.time() + PURGE_EVERY_S
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, purge_at - loop.time())):
                        await self._wake.wait()
                continue
            await self._linger.pause(full=len(self._pending) >= WRITE_BATCH)
            # Every call's newest change waiting, in one transaction (as many as WRITE_BATCH).
            batch = list(itertools.islice(self._pending, WRITE_BATCH))
            self._inflight = {call_sid: self._pending.pop(call_sid) for call_sid in batch}
            try:
                await self._write(list(self._inflight.values()))
            finally:
                self._inflight = {}
            async with self._written_one:
                self._written_one.notify_all()

    async def _purge(self) -> None:
        try:
            async with asyncio.timeout(self._write_timeout_s):
                purged = await self.store.purge(utcnow() - dt.timedelta(seconds=self.keep_s))
        except Exception as exc:
            log.warning("flow snapshots: purging old snapshots failed (%s); they stay", type(exc).__name__)
            return
        if purged:
            log.info("flow snapshots: purged %d older than %g s", purged, self.keep_s)

    async def _write(self, items: list[_Pending]) -> None:
        changes = [
            SnapshotWrite(item.call_sid, item.generation)
            if item.snapshot is None
            else SnapshotWrite(
                item.call_sid,
                item.generation,
                item.snapshot.seq,
                item.snapshot.flow,
                item.snapshot.state,
                item.snapshot.to_json(),
            )
            for item in items
        ]
        try:
            async with asyncio.timeout(self._write_timeout_s):
                await self.store.write(changes)
        except Exception as exc:  # the database failed: the calls go on, later snapshots retry
            self.dropped += len(items)
            log.debug("flow snapshots: writing %d failed", len(items), exc_info=True)
            if not self._warned:
                self._warned = True
                log.warning(
                    "flow snapshots: a write for %d call(s) failed (%s); the calls go on but may not "
                    "resume if their stream is lost; later failures are only counted",
                    len(items),
                    type(exc).__name__,
                )
            return
        self.written += len(items)
        self._warned = False
