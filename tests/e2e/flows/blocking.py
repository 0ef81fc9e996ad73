"""A flow whose hook blocks for 3 s for one caller, as a ``requests.get`` to a slow CRM would.

The slow caller is the test kit's default caller (+15550001234), so ``voicefsm test --faults``
meets the block on its first run; every other caller's lookup is instant.
"""

from __future__ import annotations

import time

from voicefsm.flow import Ask, Hangup, Say, VoiceFlow, YesNo

#: The caller whose lookup blocks (the default caller of scenarios and fault runs).
SLOW_CALLER = "+15550001234"
BLOCK_S = 3.0


class Blocking(VoiceFlow):
    """Greets, then looks the caller up in a hook that blocks (the mistake the runtime must contain)."""

    greet = Say("Hello, this is the records line.", initial=True)
    ask = Ask("Would you like your balance?", expect=YesNo())
    done = Hangup("Goodbye.")

    spoken = greet.to(ask)
    filled = ask.to(done)
    no_input = ask.to(done)
    no_match = ask.to(done)

    def on_enter_ask(self) -> None:
        """Looks the caller up with a blocking call (the wrong way: a Do step is the right one)."""
        if self.caller == SLOW_CALLER:
            time.sleep(BLOCK_S)
