"""Book a dental appointment: day, time and name, read back and confirmed with yes or no.

Each question re-asks twice on silence or on an answer it cannot use (a weekend day, a time
outside opening hours, words that are not a day), then gives up politely.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, field_validator

from voicefsm.flow import Ask, Hangup, Say, VoiceFlow, YesNo

OPENS = dt.time(8, 0)
CLOSES = dt.time(17, 30)


class Appointment(BaseModel):
    """What the caller books."""

    day: dt.date | None = None
    time: dt.time | None = None
    name: str | None = None

    @field_validator("day")
    @classmethod
    def _weekday(cls, day: dt.date | None) -> dt.date | None:
        if day is not None and day.weekday() >= 5:
            raise ValueError(f"we're closed on {day:%A}s; we're open Monday to Friday")
        return day

    @field_validator("time")
    @classmethod
    def _opening_hours(cls, time: dt.time | None) -> dt.time | None:
        if time is not None and not OPENS <= time <= CLOSES:
            raise ValueError("we're open from 8 in the morning until half past 5")
        return time


class Booking(VoiceFlow):
    """Book a dental appointment."""

    slots_model = Appointment

    greet = Say("Hi, this is Bright Smile Dental.", initial=True)
    ask_day = Ask("Which day would you like to come in?", slot="day")
    ask_time = Ask("What time on {day:%A}?", slot="time")
    ask_name = Ask("And what name should I put the booking under?", slot="name")
    confirm = Ask(
        "{name}, that's {day:%A} at {time:%H:%M}. Shall I book it? Say yes or press 1, or no or press 2.",
        expect=YesNo(),
        reprompt="Sorry, {reason}. Shall I book {day:%A} at {time:%H:%M}? Please say yes or no.",
    )
    booked = Hangup("You're booked, {name}. See you on {day:%A}. Goodbye!")
    give_up = Hangup("Sorry, I couldn't get that. Please call again later.", outcome="gave_up")

    spoken = greet.to(ask_day)
    filled = (
        ask_day.to(ask_time)
        | ask_time.to(ask_name)
        | ask_name.to(confirm)
        | confirm.to(booked, cond="yes")
        | confirm.to(ask_day)
    )
    no_input = ask_day.to(give_up) | ask_time.to(give_up) | ask_name.to(give_up) | confirm.to(give_up)
    no_match = ask_day.to(give_up) | ask_time.to(give_up) | ask_name.to(give_up) | confirm.to(give_up)
