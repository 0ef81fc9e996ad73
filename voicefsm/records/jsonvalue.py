"""Slot values as JSON text: dates, times, enums, pydantic models and dataclasses included."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
from decimal import Decimal
from pathlib import PurePath
from typing import Any
from uuid import UUID

from pydantic import BaseModel


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, set | frozenset):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Decimal | UUID | PurePath):
        return str(value)
    # A slot the flow filled must not be lost to its type: keep its text rather than fail the write.
    return str(value)


def encode_value(value: Any) -> str:
    """``value`` as JSON text; unknown types are stored as their ``str()``."""
    return json.dumps(value, default=_default, ensure_ascii=False)


def decode_value(text: str) -> Any:
    """The JSON value stored by :func:`encode_value`."""
    return json.loads(text)
