"""The ``voicefsm`` command on uvloop: what ``uvicorn.run`` gives the floor for free.

``voicefsm serve`` starts uvicorn inside ``asyncio.run``, so it runs on asyncio's default loop
even when uvloop is installed. This runs the same CLI with uvloop's loop policy, to measure
what switching would buy. Usage: ``python benchmarks/uvloop_serve.py serve flows/echo.py``.
"""

from __future__ import annotations

import asyncio

import uvloop

from voicefsm.cli import main

if __name__ == "__main__":
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    main()
