from __future__ import annotations

import pytest

from voicefsm.core.marks import MarkLedger, MarkOutcome, mark_label


def test_names_are_unique_per_label() -> None:
    ledger = MarkLedger()
    first, second = ledger.new("greet"), ledger.new("greet")
    assert first != second
    assert mark_label(first) == mark_label(second) == "greet"
    assert ledger.pending == (first, second)


def test_echo_of_a_pending_mark_is_played_once() -> None:
    ledger = MarkLedger()
    name = ledger.new("prompt")
    assert ledger.echoed(name) is MarkOutcome.PLAYED
    assert ledger.echoed(name) is MarkOutcome.UNKNOWN
    assert ledger.pending == ()


def test_marks_pending_at_a_clear_come_back_interrupted() -> None:
    ledger = MarkLedger()
    played, cleared_a, cleared_b = ledger.new("a"), ledger.new("b"), ledger.new("c")
    assert ledger.echoed(played) is MarkOutcome.PLAYED
    assert ledger.clear() == [cleared_a, cleared_b]
    assert ledger.echoed(cleared_b) is MarkOutcome.INTERRUPTED
    assert ledger.echoed(cleared_a) is MarkOutcome.INTERRUPTED
    assert ledger.echoed(cleared_a) is MarkOutcome.UNKNOWN


def test_a_mark_placed_after_a_clear_plays_normally() -> None:
    ledger = MarkLedger()
    ledger.new("old")
    ledger.clear()
    fresh = ledger.new("old")
    assert ledger.echoed(fresh) is MarkOutcome.PLAYED


def test_unknown_and_foreign_names_are_unknown() -> None:
    ledger = MarkLedger()
    assert ledger.echoed("never-sent#1") is MarkOutcome.UNKNOWN
    assert ledger.echoed("") is MarkOutcome.UNKNOWN


def test_disconnect_returns_and_forgets_pending() -> None:
    ledger = MarkLedger()
    name = ledger.new("bye")
    assert ledger.disconnect() == [name]
    assert ledger.echoed(name) is MarkOutcome.UNKNOWN


def test_cleared_memory_is_bounded() -> None:
    ledger = MarkLedger()
    for _ in range(1000):
        ledger.new("x")
        ledger.clear()
    assert len(ledger._cleared) <= MarkLedger._MAX_REMEMBERED_CLEARED


@pytest.mark.parametrize("label", ["", "a#b"])
def test_bad_labels_are_refused(label: str) -> None:
    with pytest.raises(ValueError, match="mark label"):
        MarkLedger().new(label)
