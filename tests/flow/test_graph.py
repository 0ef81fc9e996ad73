"""Diagrams of flows: Mermaid and DOT with the current state highlighted; SVG through Graphviz."""

from __future__ import annotations

import shutil

import pytest

from voicefsm.flow.errors import GraphUnavailableError
from voicefsm.flow.graph import dot, mermaid, render
from voicefsm.flow.loader import load_flow

Booking = load_flow("flows/booking.py")


def test_mermaid_highlights_the_current_state_and_can_hide_the_default_exits() -> None:
    text = mermaid(Booking, current="confirm")
    assert text.startswith("stateDiagram-v2")
    assert "confirm --> check : Filled [yes]" in text
    assert text.rstrip().endswith("confirm:::active")
    assert "hung_up" in text
    plain = mermaid(Booking, defaults=False)
    assert "hung_up" not in plain and "failed" not in plain
    assert ":::active" not in plain


async def test_an_instance_is_drawn_in_the_state_it_is_in() -> None:
    flow = Booking(start_value="ask_time")
    await flow.activate_initial_state()
    assert mermaid(flow).rstrip().endswith("ask_time:::active")
    assert "fillcolor=turquoise" in dot(flow).split('"ask_time" [')[1].split("\n")[0]


def test_dot_shows_kinds_guards_and_defaults() -> None:
    text = render(Booking, "dot")
    assert isinstance(text, str)
    assert '"confirm" [label="confirm\\n«ask»"];' in text
    assert '"confirm" -> "check" [label="filled [yes]"];' in text
    assert (
        '"greet" -> "hung_up" [label="disconnected", color=gray50, fontcolor=gray40, style=dashed];' in text
    )
    assert '"__start" -> "greet";' in text


def test_highlighting_an_unknown_state_is_an_error() -> None:
    with pytest.raises(ValueError, match="Booking has no state 'confrim' to highlight"):
        mermaid(Booking, current="confrim")
    with pytest.raises(ValueError, match="unknown diagram format 'gif'"):
        render(Booking, "gif")  # type: ignore[arg-type]


@pytest.mark.skipif(shutil.which("dot") is not None, reason="Graphviz is installed here")
def test_svg_without_graphviz_says_what_to_install() -> None:
    with pytest.raises(GraphUnavailableError, match="needs Graphviz's `dot` program"):
        render(Booking, "svg")


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot")
def test_svg_and_png_through_graphviz() -> None:
    svg = render(Booking, "svg", current="greet")
    assert isinstance(svg, str) and "<svg" in svg and "ask_day" in svg
    png = render(Booking, "png")
    assert isinstance(png, bytes) and png.startswith(b"\x89PNG")
