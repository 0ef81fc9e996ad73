"""Snapshots and restores on the in-process test line: what a resumed flow keeps, says and re-runs."""

from __future__ import annotations

from pydantic import BaseModel

from voicefsm.flow import Ask, Choice, Do, Hangup, Say, StepStub, VoiceFlow
from voicefsm.runtime.snapshot import RESUME_APOLOGY, FlowSnapshot, flow_fingerprint
from voicefsm.testing.line import FlowLine

CHARGES: list[str] = []


class Kept:
    """A snapshot sink that keeps everything it is handed."""

    def __init__(self) -> None:
        self.saved: list[FlowSnapshot] = []
        self.deleted: list[tuple[str, int]] = []

    def save(self, snapshot: FlowSnapshot) -> None:
        self.saved.append(snapshot)

    def delete(self, call_sid: str, generation: int) -> None:
        self.deleted.append((call_sid, generation))

    @property
    def last(self) -> FlowSnapshot:
        return self.saved[-1]


class Order(BaseModel):
    size: str | None = None
    crust: str | None = None


SIZES = Choice({"small": ["small"], "large": ["large"]})
CRUSTS = Choice({"thin": ["thin"], "thick": ["thick"]})


class Pizza(VoiceFlow):
    slots_model = Order
    max_duration_s = 300.0
    greet = Say("Pizza line.", initial=True)
    ask_size = Ask("Small or large?", slot="size", expect=SIZES, retries=1)
    ask_crust = Ask("Thin or thick crust?", slot="crust", expect=CRUSTS, retries=1)
    done = Hangup("A {size} pizza with a {crust} crust. Goodbye!")
    give_up = Hangup("Sorry, goodbye.")

    spoken = greet.to(ask_size)
    filled = ask_size.to(ask_crust) | ask_crust.to(done)
    no_input = ask_size.to(give_up) | ask_crust.to(give_up)
    no_match = ask_size.to(give_up) | ask_crust.to(give_up)


async def test_every_transition_is_snapshotted_and_a_normal_end_deletes_it() -> None:
    kept = Kept()
    async with FlowLine(Pizza, snapshots=kept) as line:
        await line.answer("large")
        await line.answer("thin")
        await line.ended()
    assert [snapshot.state for snapshot in kept.saved][:2] == ["greet", "ask_size"]
    at_crust = next(s for s in kept.saved if s.state == "ask_crust")
    assert at_crust.slots == {"size": "large", "crust": None}
    assert at_crust.flow == "Pizza" and at_crust.fingerprint == flow_fingerprint(Pizza)
    assert at_crust.entries == 3 and at_crust.caller == line.caller
    assert [s.seq for s in kept.saved] == list(range(1, len(kept.saved) + 1))
    assert all(s.state not in ("done", "give_up", "hung_up") for s in kept.saved)  # never a final state
    assert kept.deleted == [(line.call.call_sid, 0)]


async def test_a_lost_line_keeps_the_snapshot_and_a_restore_asks_the_question_again() -> None:
    kept = Kept()
    async with FlowLine(Pizza, snapshots=kept) as line:
        await line.answer("large")
        await line.listening("ask_crust")
        line.far_end.hang_up("connection closed")  # the stream was lost, not hung up
        await line.ended()
    assert kept.deleted == []
    snapshot = kept.last
    assert snapshot.state == "ask_crust"

    resumed = Kept()
    async with FlowLine(Pizza, restore=snapshot, snapshots=resumed) as line:
        await line.listening("ask_crust")
        assert line.agent_said[:2] == [RESUME_APOLOGY, "Thin or thick crust?"]
        assert line.transitions[0] == ("ask_crust", "resumed", "ask_crust")
        line.say("thin")
        result = await line.ended()
    line.assert_outcome("completed")
    assert result.slots == {"size": "large", "crust": "thin"}
    assert line.agent_said[-1] == "A large pizza with a thin crust. Goodbye!"
    assert {s.generation for s in resumed.saved} == {1}  # a resume's snapshots outrank the lost stream's
    assert resumed.deleted == [(line.call.call_sid, 1)]


async def test_a_restored_ask_keeps_its_retry_count() -> None:
    kept = Kept()
    async with FlowLine(Pizza, snapshots=kept) as line:
        await line.answer("medium")  # no match: the one retry is used
        await line.listening("ask_size")
        line.far_end.hang_up("connection closed")
        await line.ended()
    assert kept.last.failures == {"no_match": 1}

    async with FlowLine(Pizza, restore=kept.last) as line:
        await line.answer("medium")  # a second no match: retries are used up, as without the drop
        await line.ended()
    line.assert_path("ask_size", "give_up")


async def test_the_duration_limit_counts_the_time_before_the_resume() -> None:
    kept = Kept()
    async with FlowLine(Pizza, snapshots=kept) as line:
        await line.listening("ask_size")
        line.far_end.hang_up("connection closed")
        await line.ended()
    late = FlowSnapshot(**{**_fields(kept.last), "elapsed_s": 299.0})
    async with FlowLine(Pizza, restore=late) as line:
        await line.ended()
    line.assert_outcome("limit")


def _fields(snapshot: FlowSnapshot) -> dict[str, object]:
    return {name: getattr(snapshot, name) for name in FlowSnapshot.__dataclass_fields__}


class Checkout(VoiceFlow):
    greet = Say("One moment.", initial=True)
    charge = Do("charge_card")
    lookup = Do("look_up", idempotent=True)
    bye = Hangup("Paid. Goodbye!")

    spoken = greet.to(charge)
    done = charge.to(lookup) | lookup.to(bye)

    async def charge_card(self) -> None:
        CHARGES.append("charge")

    async def look_up(self) -> None:
        CHARGES.append("lookup")


async def _lost_in(state: str) -> FlowSnapshot:
    """Run Checkout until ``state``'s step is running (stubbed to hang), then lose the line."""
    kept = Kept()
    async with FlowLine(Checkout, snapshots=kept, stubs={state: StepStub(hang=True)}) as line:
        await line.until(lambda: line.state == state, f"the {state} step")
        line.far_end.hang_up("connection closed")
        await line.ended()
    snapshot = kept.last
    assert (snapshot.state, snapshot.step_running) == (state, True)
    return snapshot


async def test_a_step_cut_off_while_running_is_not_run_twice() -> None:
    snapshot = await _lost_in("charge")
    CHARGES.clear()
    async with FlowLine(Checkout, restore=snapshot) as line:
        await line.ended()
    assert CHARGES == []  # the card may have been charged already: never twice
    line.assert_outcome("error")  # the step's failure: by default an apology and goodbye
    assert any("not run again" in message for _, message in line.errors), line.errors


async def test_an_idempotent_step_cut_off_while_running_runs_again() -> None:
    snapshot = await _lost_in("lookup")
    CHARGES.clear()
    async with FlowLine(Checkout, restore=snapshot) as line:
        await line.ended()
    assert CHARGES == ["lookup"]
    line.assert_outcome("completed")
