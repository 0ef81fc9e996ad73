"""A keypad-and-speech front desk: billing, support or opening hours, with a repeat option.

Billing and support are transferred to their teams; a caller the menu cannot help (silence,
or three answers it cannot place) is put through to the operator.
"""

from __future__ import annotations

from voicefsm.flow import Ask, Choice, Hangup, Say, Transfer, VoiceFlow, YesNo

BILLING = "+15550100001"
SUPPORT = "+15550100002"
OPERATOR = "+15550100000"

MENU = Choice(
    {
        "billing": ["bill", "bills", "invoice", "payment", "pay"],
        "support": ["help", "technical support", "tech support", "problem"],
        "hours": ["opening hours", "open", "opening times"],
        "repeat": ["again", "menu", "repeat that"],
    },
    keys={"1": "billing", "2": "support", "3": "hours", "9": "repeat"},
)


class FrontDesk(VoiceFlow):
    """Route a call to billing, support or the opening hours."""

    greet = Say("Thanks for calling Acme.", initial=True)
    menu = Ask(
        "For billing, say billing or press 1. For support, say support or press 2. "
        "For our opening hours, say hours or press 3. To hear this again, press 9.",
        expect=MENU,
        no_input_s=5.0,
    )
    hours = Say("We're open Monday to Friday, from 8 in the morning until 6 in the evening.")
    anything_else = Ask("Is there anything else I can help you with?", expect=YesNo())
    billing = Transfer("Connecting you to billing.", number=BILLING)
    support = Transfer("Connecting you to support.", number=SUPPORT)
    operator = Transfer("Let me put you through to our team.", number=OPERATOR)
    goodbye = Hangup("Thanks for calling Acme. Goodbye!")

    spoken = greet.to(menu) | hours.to(anything_else)
    filled = (
        menu.to(billing, cond="wants_billing")
        | menu.to(support, cond="wants_support")
        | menu.to(hours, cond="wants_hours")
        | menu.to(menu)
        | anything_else.to(menu, cond="yes")
        | anything_else.to(goodbye)
    )
    no_input = menu.to(operator) | anything_else.to(goodbye)
    no_match = menu.to(operator) | anything_else.to(goodbye)

    def wants_billing(self, value: object) -> bool:
        """Guard: the caller chose billing."""
        return value == "billing"

    def wants_support(self, value: object) -> bool:
        """Guard: the caller chose support."""
        return value == "support"

    def wants_hours(self, value: object) -> bool:
        """Guard: the caller asked for the opening hours."""
        return value == "hours"
