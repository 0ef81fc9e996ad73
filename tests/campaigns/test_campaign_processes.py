"""Two ``voicefsm serve`` processes on one PostgreSQL share a campaign: both dial, under one cap and pace.

Both advertise the first server's address (one public URL, as behind a load balancer), so every
Twilio callback lands on the first process, also for the calls the second placed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fakes.twilio_rest_fake import ACCOUNT_SID, AUTH_TOKEN
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from twilio_calls import TwilioCalls

from voicefsm.records.dburl import database_url

ROOT = Path(__file__).resolve().parents[2]
API_TOKEN = "campaign-test-token"
NUMBERS = [f"+1555800{index:04d}" for index in range(40)]
RATE, CAP = 10.0, 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def server(port: int, env: dict[str, str], folder: Path) -> AsyncIterator[None]:
    """``voicefsm serve flows/reminder.py`` on ``port`` until the block ends (SIGTERM, then awaited)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voicefsm", "serve", str(ROOT / "flows" / "reminder.py"), "--port", str(port),
        cwd=folder, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not any("serving" in line for line in seen):
                line = (await process.stdout.readline()).decode()
                assert line, f"voicefsm serve exited: {''.join(seen)}"
                seen.append(line)
        drain = asyncio.create_task(process.stdout.read())  # keep its pipe from filling up
        try:
            yield
        finally:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                await process.wait()
            await drain
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_two_server_processes_share_one_campaign(postgres_url: str, tmp_path: Path) -> None:
    first, second = free_port(), free_port()
    public = f"http://127.0.0.1:{first}"
    with TwilioCalls(duration_s=0.1) as twilio:
        env = {
            key: value for key, value in os.environ.items() if not key.startswith(("TWILIO_", "VOICEFSM_"))
        }
        env.update(
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,  # production mode: the stand-in's callbacks are signed and checked
            TWILIO_PHONE_NUMBER="+15550009999",
            TWILIO_API_BASE=twilio.base_url,
            VOICEFSM_PUBLIC_URL=public,
            VOICEFSM_DB_URL=postgres_url,
            VOICEFSM_API_TOKENS=API_TOKEN,
        )
        async with server(first, env, tmp_path), server(second, env, tmp_path):
            csv = "number\n" + "\n".join(NUMBERS) + "\n"
            options = {"rate": RATE, "max_concurrent": CAP, "window_start": "00:00", "window_end": "00:00"}
            headers = {"Authorization": f"Bearer {API_TOKEN}"}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{second}", headers=headers) as http:
                answer = await http.post(
                    "/api/campaigns", json={"flow": "Reminder", "csv": csv, "options": options}
                )
                assert answer.status_code == 201, answer.text

                def every_call_ended() -> bool:
                    with twilio.all_ended:
                        return twilio.all_ended.wait_for(lambda: len(twilio.ended) >= len(NUMBERS), 180)

                assert await asyncio.to_thread(every_call_ended), f"{len(twilio.ended)} calls ended"
                progress = (await http.get(f"/api/campaigns/{answer.json()['id']}")).json()
    engine = create_async_engine(database_url(postgres_url))
    try:
        async with engine.connect() as connection:
            workers = Counter(
                row[0]
                for row in await connection.execute(text("SELECT worker FROM voicefsm_campaign_attempts"))
            )
            asked = [row[0].timestamp() for row in await connection.execute(
                text("SELECT placed_at FROM voicefsm_campaign_attempts ORDER BY placed_at")
            )]  # fmt: skip
    finally:
        await engine.dispose()
    assert not twilio.callback_errors
    assert progress["state"] == "finished" and progress["outcomes"] == {"answered": len(NUMBERS)}
    assert sorted(call.to for call in twilio.created) == NUMBERS
    assert len(workers) == 2, workers  # both processes dialed
    assert twilio.max_live <= CAP
    assert min(later - earlier for earlier, later in itertools.pairwise(asked)) >= 1 / RATE - 0.001
