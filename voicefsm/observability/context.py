"""Which call the running code works for: a context variable set where a call's task starts.

``with bind_call(call_sid):`` around a call (the driver does it for every call) makes
:func:`current_call` return the SID in that task, in every task it creates (asyncio copies the
context), in the step pool's threads (they run in a copy of the caller's context) and in SDK
callbacks marshalled onto the loop with the context captured when the call started them. The log
formatters read it, so every line logged during a call carries its SID without anyone passing it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_CALL_SID: contextvars.ContextVar[str | None] = contextvars.ContextVar("voicefsm_call_sid", default=None)


@contextlib.contextmanager
def bind_call(call_sid: str | None) -> Iterator[None]:
    """Mark the code run in this block (and the tasks and threads it starts) as working for ``call_sid``."""
    token = _CALL_SID.set(call_sid)
    try:
        yield
    finally:
        _CALL_SID.reset(token)


def current_call() -> str | None:
    """The SID of the call the running code works for, or None outside any call."""
    return _CALL_SID.get()
