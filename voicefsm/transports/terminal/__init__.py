"""The terminal as a phone (``voicefsm chat``): what is typed (:mod:`.keyboard`) and shown (:mod:`.view`).

The call itself runs through the one driver over an in-process far end; see
:mod:`voicefsm.runtime.chat`.
"""

from voicefsm.transports.terminal.keyboard import (
    HELP,
    CallerInput,
    Help,
    Invalid,
    Keys,
    Leave,
    Machine,
    Silence,
    Speech,
    StdinLines,
    parse_input,
)
from voicefsm.transports.terminal.view import TerminalActions, TerminalView, show_value

__all__ = [
    "HELP",
    "CallerInput",
    "Help",
    "Invalid",
    "Keys",
    "Leave",
    "Machine",
    "Silence",
    "Speech",
    "StdinLines",
    "TerminalActions",
    "TerminalView",
    "parse_input",
    "show_value",
]
