"""The numbers of a campaign, from a CSV file: one row per callee, with per-row slot values.

Columns: ``number`` (E.164, required), ``timezone`` (IANA name, optional: the campaign's default when
absent or empty), and any others, which become the flow's slot values for that call (``name``,
``appointment``...). Every problem is reported with its file and line.
"""

from __future__ import annotations

import csv
import io
import re
import zoneinfo
from dataclasses import dataclass, field

from voicefsm.campaigns.errors import ContactListError

NUMBER_COLUMN = "number"
TIMEZONE_COLUMN = "timezone"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
MAX_CONTACTS = 100_000


@dataclass(frozen=True, slots=True)
class Contact:
    """One callee: the number, the time zone of its calling window (None: the campaign's), slot values."""

    row: int
    number: str
    timezone: str | None = None
    slots: dict[str, str] = field(default_factory=dict)


def check_timezone(name: str, where: str) -> str:
    """``name`` if it is an IANA time zone this machine knows; else ContactListError naming ``where``."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ContactListError(
            f"{where}: unknown time zone {name!r}; use an IANA name such as Europe/Paris or America/New_York"
        ) from None
    return name


def parse_contacts(text: str, source: str = "numbers.csv") -> list[Contact]:
    """The contacts of a CSV text (``source`` names it in errors); duplicates numbers are refused."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    columns = [name.strip() for name in reader.fieldnames or []]
    if NUMBER_COLUMN not in columns:
        shown = ", ".join(columns) or "none"
        raise ContactListError(
            f"{source}:1: no '{NUMBER_COLUMN}' column (columns: {shown}); the first line must name the "
            f"columns, e.g. number,timezone,name"
        )
    contacts: list[Contact] = []
    seen: dict[str, int] = {}
    for values in reader:
        line = reader.line_num
        row = {(key or "").strip(): (value or "").strip() for key, value in values.items() if key is not None}
        if None in values:
            raise ContactListError(f"{source}:{line}: more values than columns; quote values with commas")
        number = row.pop(NUMBER_COLUMN, "").replace(" ", "")
        if not number and not any(row.values()):
            continue  # a blank line
        if not E164.match(number):
            raise ContactListError(
                f"{source}:{line}: {number or 'an empty number'!r} is not an E.164 number; write it as "
                "+ country code and number, e.g. +15551230001"
            )
        if number in seen:
            raise ContactListError(
                f"{source}:{line}: {number} is already on line {seen[number]}; list it once"
            )
        seen[number] = line
        zone = row.pop(TIMEZONE_COLUMN, "") or None
        if zone is not None:
            check_timezone(zone, f"{source}:{line}")
        contacts.append(Contact(row=line, number=number, timezone=zone, slots=row))
        if len(contacts) > MAX_CONTACTS:
            raise ContactListError(f"{source}: more than {MAX_CONTACTS} numbers; split it into campaigns")
    if not contacts:
        raise ContactListError(f"{source}: no numbers; add one row per callee under the header line")
    return contacts
