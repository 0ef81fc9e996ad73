"""One rule for too many digits, by voice and by keypad: refused, with the same reason, none left over.

A keypad entry ends at its terminator, at a pause, or at one key more than the longest valid
answer (then refused as the same digits said are); a single-key answer (1 to 5) ends at its key.
"""

from __future__ import annotations

from pydantic import BaseModel

from voicefsm.flow import Ask, Digits, Hangup, Number, VoiceFlow
from voicefsm.testing import FlowLine


class Account(BaseModel):
    account: str | None = None
    people: int | None = None


class AccountLine(VoiceFlow):
    slots_model = Account
    ask_account = Ask("Your account number?", slot="account", expect=Digits(6, 8), initial=True)
    ask_people = Ask("How many people?", slot="people", expect=Number(min=1, max=20))
    done = Hangup("Thanks.")
    give_up = Hangup("Sorry.", outcome="gave_up")
    filled = ask_account.to(ask_people) | ask_people.to(done)
    no_input = ask_account.to(give_up) | ask_people.to(give_up)
    no_match = ask_account.to(give_up) | ask_people.to(give_up)


async def test_nine_digits_are_refused_by_keypad_as_by_voice() -> None:
    async with FlowLine(AccountLine) as spoken:
        await spoken.answer("one two three four five six seven eight nine")
        await spoken.heard("that was 9 digits; I need at most 8")
        spoken.hang_up()
    async with FlowLine(AccountLine) as keyed:
        await keyed.keys("123456789")
        await keyed.heard("that was 9 digits; I need at most 8")
        keyed.assert_state("ask_account")  # the ninth key did not answer the next question
        await keyed.keys("12345678#")
        await keyed.heard("How many people?")
        keyed.hang_up()
    keyed.assert_slots(account="12345678")
    assert "people" not in keyed.slots or keyed.slots["people"] is None


async def test_a_number_too_long_by_keypad_is_refused_not_cut() -> None:
    async with FlowLine(AccountLine) as line:
        await line.keys("123456#")
        await line.keys("123")  # "12" would be an answer; a third key ends the entry, refused
        await line.heard("that's more than 20")
        line.assert_state("ask_people")
        await line.keys("4#")
        await line.ended()
    line.assert_slots(people=4)
