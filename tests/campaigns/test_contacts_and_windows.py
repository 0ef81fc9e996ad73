"""The CSV of numbers and the calling windows: what is accepted, and how each problem is named."""

from __future__ import annotations

import datetime as dt

import pytest

from voicefsm.campaigns.contacts import Contact, parse_contacts
from voicefsm.campaigns.errors import CampaignError, ContactListError
from voicefsm.campaigns.store import CampaignOptions
from voicefsm.campaigns.windows import CallingWindow


def test_rows_become_contacts_with_their_time_zone_and_slot_values() -> None:
    text = (
        "\ufeffnumber,timezone,name,appointment\n"
        "+15551230001,Europe/Paris,Ann,Tuesday 10:00\n\n"
        "+1 555 123 0002,,Bob,\n"
    )
    assert parse_contacts(text, "people.csv") == [
        Contact(2, "+15551230001", "Europe/Paris", {"name": "Ann", "appointment": "Tuesday 10:00"}),
        Contact(4, "+15551230002", None, {"name": "Bob", "appointment": ""}),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("phone\n+15551230001\n", "people.csv:1: no 'number' column (columns: phone)"),
        ("number\n5551230001\n", "people.csv:2: '5551230001' is not an E.164 number"),
        ("number\n+15551230001\n+15551230001\n", "people.csv:3: +15551230001 is already on line 2"),
        ("number,timezone\n+15551230001,Mars/Olympus\n", "people.csv:2: unknown time zone 'Mars/Olympus'"),
        ("number\n", "people.csv: no numbers"),
        ("number,name\n+15551230001,Ann,extra\n", "people.csv:2: more values than columns"),
    ],
)
def test_each_problem_names_the_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ContactListError) as caught:
        parse_contacts(text, "people.csv")
    assert str(caught.value).startswith(message)


PARIS = "Europe/Paris"


def at(hour: int, minute: int = 0) -> dt.datetime:
    """A winter day in Paris (UTC+1), as UTC."""
    return dt.datetime(2026, 12, 7, hour, minute, tzinfo=dt.UTC)


def test_a_window_is_the_callee_local_time() -> None:
    window = CallingWindow.parse("09:00", "20:00")
    assert window.next_open(at(8, 30), PARIS) is None  # 09:30 in Paris
    assert window.next_open(at(7, 30), PARIS) == at(8, 0)  # 08:30 in Paris: opens at 09:00 Paris
    assert window.next_open(at(19, 30), PARIS) == at(8, 0) + dt.timedelta(days=1)  # 20:30: tomorrow
    assert window.next_open(at(7, 30), "America/New_York") == at(14, 0)  # 02:30 in New York


def test_a_window_over_midnight_and_an_all_day_window() -> None:
    night = CallingWindow.parse("20:00", "02:00")
    assert night.next_open(at(23, 30), PARIS) is None  # 00:30
    assert night.next_open(at(12, 0), PARIS) == at(19, 0)
    assert CallingWindow.parse("00:00", "00:00").next_open(at(3, 0), PARIS) is None


def test_options_out_of_range_say_which_option() -> None:
    with pytest.raises(CampaignError, match="--rate 0: calls per second"):
        CampaignOptions(rate=0)
    with pytest.raises(CampaignError, match="--max-concurrent 0"):
        CampaignOptions(max_concurrent=0)
    with pytest.raises(CampaignError, match="--window-start '9h' is not a time of day"):
        CallingWindow.parse("9h", "20:00")


def test_the_queue_gets_the_same_database_as_a_libpq_url() -> None:
    from voicefsm.campaigns.service import libpq_url

    assert libpq_url("postgres://app:p%40ss@db:5432/calls") == "postgresql://app:p%40ss@db:5432/calls"
    assert libpq_url("postgresql+asyncpg://app@db/calls") == "postgresql://app@db/calls"
    with pytest.raises(CampaignError, match="campaigns run on PostgreSQL"):
        libpq_url("sqlite:///voicefsm.db")
