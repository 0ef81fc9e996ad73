"""Calling windows: the hours a callee may be called, in the callee's own time zone."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass

from voicefsm.campaigns.errors import CampaignError


def parse_clock(value: str, option: str) -> dt.time:
    """``"09:00"`` -> 09:00; CampaignError naming ``option`` otherwise."""
    try:
        return dt.time.fromisoformat(value)
    except ValueError:
        raise CampaignError(
            f"{option} {value!r} is not a time of day; write it as HH:MM, e.g. 09:00"
        ) from None


@dataclass(frozen=True, slots=True)
class CallingWindow:
    """Every day from ``start`` to ``end`` (local to the callee); start == end means all day.

    A window whose end is before its start runs over midnight (20:00-02:00).
    """

    start: dt.time
    end: dt.time

    @classmethod
    def parse(cls, start: str, end: str) -> CallingWindow:
        return cls(parse_clock(start, "--window-start"), parse_clock(end, "--window-end"))

    def _open_at(self, local: dt.time) -> bool:
        if self.start == self.end:
            return True
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def next_open(self, now: dt.datetime, timezone: str) -> dt.datetime | None:
        """None when ``now`` (aware) is inside the window in ``timezone``; else when it next opens (UTC)."""
        zone = zoneinfo.ZoneInfo(timezone)
        local = now.astimezone(zone)
        if self._open_at(local.time()):
            return None
        opening = dt.datetime.combine(local.date(), self.start, tzinfo=zone)
        if opening <= local:
            opening = dt.datetime.combine(local.date() + dt.timedelta(days=1), self.start, tzinfo=zone)
        return opening.astimezone(dt.UTC)
