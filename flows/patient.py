"""A patient who phones the dental booking line (flows/booking.py) and books a check-up.

This flow is a *caller*: bridged to the booking agent with :mod:`voicefsm.testing.bridge`,
what the agent says reaches it as speech, and what it says reaches the agent. Each state
answers the question before it and then listens for the next one: the expectations are the
agent's questions, matched by a few words each ("what time", "what name", "shall I book").
A question it did not expect gets the same answer again; silence or confusion twice over,
and the patient gives up politely.
"""

from __future__ import annotations

from voicefsm.flow import Ask, Choice, Hangup, VoiceFlow


class Patient(VoiceFlow):
    """Book a check-up on Tuesday at half past ten for Alex Morgan."""

    # The patient waits through the greeting and opens with what they want once they are asked.
    ask_for_tuesday = Ask(
        "Hi, I'd like to book a check-up on Tuesday, please.",
        expect=Choice({"time": ["what time"]}),
        reprompt="I'd like to come in on Tuesday.",
        initial=True,
    )
    give_time = Ask(
        "Half past ten in the morning, please.",
        expect=Choice({"name": ["what name", "which name", "your name"]}),
        reprompt="Half past ten, please.",
    )
    give_name = Ask(
        "Alex Morgan",
        expect=Choice({"read_back": ["shall i book", "should i book"]}),
        reprompt="The name is Alex Morgan",
    )
    agree = Ask("Yes, please.", expect=Choice({"booked": ["booked"]}), reprompt="Yes.")
    thank = Hangup("Great, thank you. Bye!")
    give_up = Hangup("Sorry, I'll call back later. Bye.", outcome="gave_up")

    filled = ask_for_tuesday.to(give_time) | give_time.to(give_name) | give_name.to(agree) | agree.to(thank)
    no_input = ask_for_tuesday.to(give_up) | give_time.to(give_up) | give_name.to(give_up) | agree.to(give_up)
    no_match = ask_for_tuesday.to(give_up) | give_time.to(give_up) | give_name.to(give_up) | agree.to(give_up)
