"""The in-process line the runtime tests use: the public one from :mod:`voicefsm.testing.line`."""

from voicefsm.testing.line import CALLER, MONDAY, WAIT_S, FlowLine

__all__ = ["CALLER", "MONDAY", "WAIT_S", "FlowLine"]
