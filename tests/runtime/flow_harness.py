"""The in-process line the runtime tests use: the public one from :mod:`voicefsm.testing.line`."""

from voicefsm.runtime.driver import ULAW_BYTES_PER_S
from voicefsm.testing.line import CALLER, MONDAY, WAIT_S, FlowLine

__all__ = ["CALLER", "MONDAY", "ULAW_BYTES_PER_S", "WAIT_S", "FlowLine"]
