"""``voicefsm serve`` on asyncio's default event loop instead of uvloop, to measure what uvloop buys.

``voicefsm serve`` runs on uvloop whenever it is installed; this runs the same CLI with that
choice turned off. Usage: ``python benchmarks/asyncio_serve.py serve flows/echo.py``.
"""

from __future__ import annotations

from voicefsm import cli

if __name__ == "__main__":
    cli._fastest_event_loop = lambda: None  # asyncio.Runner's default: a new asyncio loop
    cli.main()
