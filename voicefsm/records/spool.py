"""The records' spool: call records kept on disk while the database is down, replayed in order later.

A folder of JSON-lines segment files (``<time>-<pid>.jsonl``), each line one record
(``{"kind": ..., "call_sid": ..., "args": {...}}``, times as ``{"$voicefsm.at": "<ISO 8601>"}``). The
writer appends whole batches and replays from the oldest segment; how far a segment was replayed is
kept beside it (``<segment>.pos``, the byte offset of the next record), so a restart resumes where
the last run stopped: a record is replayed twice only when the process died between a batch's commit
and the write of its position.

Each process holds an exclusive lock (``flock``) on the segments it writes or replays, so several
workers can share the folder: a segment left by a process that died is unlocked, and the next
writer to open the spool takes it over and replays it first.

The folder is bounded (``max_bytes``, all segments together): a batch that does not fit, or that the
disk refuses, is not kept, and the writer counts it as lost. All methods block (file I/O): the
writer runs them in a thread.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

try:  # POSIX; elsewhere the folder is for one process at a time
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: A record: the CallStore write method's name, the call SID, its keyword arguments.
SpooledRecord = tuple[str, str, dict[str, Any]]

SEGMENT_SUFFIX = ".jsonl"
POSITION_SUFFIX = ".pos"
DEFAULT_SEGMENT_BYTES = 1 << 20
_AT = "$voicefsm.at"


class SpoolFullError(OSError):
    """The spool folder reached its size limit (``VOICEFSM_RECORDS_SPOOL_MAX_MB``)."""


def encode_record(record: SpooledRecord) -> str:
    """One JSON line (without the newline); datetimes as ``{"$voicefsm.at": iso}``."""
    kind, call_sid, arguments = record
    return json.dumps(
        {"kind": kind, "call_sid": call_sid, "args": _encode(arguments)}, ensure_ascii=False, default=_default
    )


def decode_record(line: str) -> SpooledRecord:
    """The record of one line; raises ValueError for a line that is not one (e.g. cut by a crash)."""
    data = json.loads(line, object_hook=_decode)
    if not isinstance(data, dict) or not isinstance(data.get("args"), dict):
        raise ValueError("not a spooled record")
    kind, call_sid = data.get("kind"), data.get("call_sid")
    if not isinstance(kind, str) or not isinstance(call_sid, str):
        raise ValueError("not a spooled record")
    return kind, call_sid, data["args"]


def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {_AT: value.isoformat()}
    if isinstance(value, Mapping):
        return {str(key): _encode(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _default(value: Any) -> Any:
    return str(value)


def _decode(data: dict[str, Any]) -> Any:
    if len(data) == 1 and isinstance(data.get(_AT), str):
        return dt.datetime.fromisoformat(data[_AT])
    return data


@dataclass(slots=True)
class _Segment:
    path: Path
    handle: IO[bytes]
    offset: int  # the next record to replay starts here
    size: int
    records: int  # not yet replayed
    own: bool  # this process appends to it

    @property
    def position(self) -> Path:
        return self.path.with_name(self.path.name + POSITION_SUFFIX)


@dataclass(slots=True)
class RecordSpool:
    """A bounded folder of spooled records; :meth:`open` first (it takes over orphaned segments)."""

    directory: Path
    max_bytes: int
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    _segments: list[_Segment] = field(default_factory=list)
    _seq: int = 0
    #: Lines that could not be read back (cut by a crash): lost, counted by the writer.
    unreadable: int = 0

    # -- state -----------------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Records in the spool, not yet replayed."""
        return sum(segment.records for segment in self._segments)

    @property
    def size(self) -> int:
        """Bytes the spool's segments take, replayed records included until their segment is deleted."""
        return sum(segment.size for segment in self._segments)

    # -- lifecycle -------------------------------------------------------------------------------------

    def open(self) -> int:
        """Create the folder and take over every segment no other process holds; returns their records."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}")):
            if any(segment.path == path for segment in self._segments):
                continue
            segment = self._take_over(path)
            if segment is not None:
                self._segments.append(segment)
        return self.depth

    def close(self) -> None:
        """Release the segments (their records stay on disk for the next start)."""
        for segment in self._segments:
            segment.handle.close()
        self._segments.clear()

    # -- appending -------------------------------------------------------------------------------------

    def append(self, records: Iterable[SpooledRecord]) -> int:
        """Append ``records`` as one write; returns how many. Raises SpoolFullError or OSError (disk)."""
        lines = [encode_record(record) + "\n" for record in records]
        if not lines:
            return 0
        data = "".join(lines).encode()
        if self.size + len(data) > self.max_bytes:
            raise SpoolFullError(
                f"the records spool {self.directory} holds {self.size} of its {self.max_bytes} bytes"
            )
        segment = self._tail()
        try:
            segment.handle.seek(segment.size)
            segment.handle.write(data)
            segment.handle.flush()
            os.fsync(segment.handle.fileno())
        except OSError:
            # Disk full mid-write: cut the partial line off, so what was kept reads back whole.
            try:
                segment.handle.truncate(segment.size)
            except OSError:
                log.debug("records spool: could not cut %s back", segment.path, exc_info=True)
            raise
        segment.size += len(data)
        segment.records += len(lines)
        return len(lines)

    def _tail(self) -> _Segment:
        last = self._segments[-1] if self._segments else None
        if last is not None and last.own and last.size < self.segment_bytes:
            return last
        self._seq += 1
        path = self.directory / f"{time.time_ns():020d}-{os.getpid()}-{self._seq:04d}{SEGMENT_SUFFIX}"
        handle = path.open("a+b")
        _lock(handle)
        segment = _Segment(path, handle, offset=0, size=0, records=0, own=True)
        self._segments.append(segment)
        return segment

    # -- replaying -------------------------------------------------------------------------------------

    def peek(self, limit: int) -> tuple[list[SpooledRecord], int]:
        """Up to ``limit`` of the oldest records (from one segment) and the offset after them.

        Unreadable lines on the way are skipped and counted in :attr:`unreadable`.
        """
        while self._segments:
            head = self._segments[0]
            head.handle.seek(head.offset)
            records: list[SpooledRecord] = []
            offset = head.offset
            while len(records) < limit and offset < head.size:
                line = head.handle.readline()
                if not line:
                    break
                offset += len(line)
                try:
                    records.append(decode_record(line.decode()))
                except (ValueError, UnicodeDecodeError):
                    self.unreadable += 1
                    head.records = max(0, head.records - 1)
            if records:
                return records, offset
            # Nothing readable up to the segment's end (or a line cut by a crash): it is done.
            self.unreadable += head.records
            head.records = 0
            self._finish(head)
        return [], 0

    def consumed(self, count: int, offset: int) -> None:
        """The ``count`` records :meth:`peek` returned are in the database; remember it on disk."""
        head = self._segments[0]
        head.offset = offset
        head.records = max(0, head.records - count)
        if head.offset >= head.size:
            self._finish(head)
            return
        temporary = head.position.with_suffix(".tmp")
        temporary.write_text(str(offset))
        os.replace(temporary, head.position)

    def _finish(self, segment: _Segment) -> None:
        """A segment fully replayed: delete it (and its position)."""
        self._segments.remove(segment)
        segment.position.unlink(missing_ok=True)
        segment.path.unlink(missing_ok=True)
        segment.handle.close()

    def _take_over(self, path: Path) -> _Segment | None:
        try:
            handle = path.open("r+b")
        except OSError:
            return None
        if not _lock(handle, wait=False):
            handle.close()  # another live process writes or replays it
            return None
        size = handle.seek(0, os.SEEK_END)
        offset = 0
        position = path.with_name(path.name + POSITION_SUFFIX)
        try:
            offset = min(size, max(0, int(position.read_text().strip() or 0)))
        except (OSError, ValueError):
            offset = 0
        handle.seek(offset)
        records = sum(1 for line in handle if line.strip())
        if records == 0:
            position.unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            handle.close()
            return None
        return _Segment(path, handle, offset=offset, size=size, records=records, own=False)


def _lock(handle: IO[bytes], *, wait: bool = True) -> bool:
    if fcntl is None:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True
