"""``voicefsm campaign`` as a user runs it, against a server whose campaigns live in an embedded PostgreSQL
(no database configured: the records on SQLite, the queue and campaigns beside them)."""

from __future__ import annotations

import asyncio
import os
import pwd
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.twilio_rest_fake import ACCOUNT_SID, AUTH_TOKEN
from pydantic import SecretStr
from twilio_calls import TwilioCalls
from typer.testing import CliRunner

from voicefsm.cli import app
from voicefsm.server.app import create_app
from voicefsm.server.campaign_wiring import server_campaigns
from voicefsm.server.serving import running_server
from voicefsm.settings import Settings

FLOW = str(Path(__file__).resolve().parents[2] / "flows" / "survey.py")


@pytest.fixture
def records_folder() -> Iterator[Path]:
    """A folder the embedded PostgreSQL can use (as root it runs as 'nobody', who must reach it)."""
    folder = Path(tempfile.mkdtemp(prefix="voicefsm-campaign-"))
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    try:
        yield folder
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


async def test_start_watch_pause_resume_with_no_database_configured(
    records_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TWILIO_AUTH_TOKEN_SECONDARY", "VOICEFSM_PUBLIC_URL", "PUBLIC_URL", "VOICEFSM_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    numbers = records_folder / "numbers.csv"
    numbers.write_text("number,name\n" + "".join(f"+1555500{i:04d},Person {i}\n" for i in range(6)))
    with TwilioCalls(duration_s=0.05) as twilio:
        settings = Settings().model_copy(
            update={
                "db_url": f"sqlite:///{records_folder / 'voicefsm.db'}",
                "twilio_account_sid": ACCOUNT_SID,
                "twilio_auth_token": None,  # dev mode: the stand-in's callbacks are not checked here
                "twilio_phone_number": "+15550009999",
                "twilio_api_base": twilio.base_url,
            }
        )
        # Settings without a token are dev mode; campaigns need credentials to dial: give them to REST only.
        settings_for_rest = settings.model_copy(update={"twilio_auth_token": SecretStr(AUTH_TOKEN)})
        async with server_campaigns(settings_for_rest, "http://placeholder") as campaigns:
            # Nothing is started for campaigns until one is: the embedded PostgreSQL comes with the first.
            assert campaigns.opened is None and not (records_folder / "voicefsm-pg").exists()
            flow_app = create_app(settings, campaigns=campaigns, flow_description={"name": "Survey"})
            async with running_server(flow_app) as server:
                campaigns.public_base = server.http_url
                base = server.http_url
                code, output = await asyncio.to_thread(
                    cli, "campaign", "start", FLOW, str(numbers), "--rate", "20", "--max-concurrent", "2",
                    "--window-start", "00:00", "--window-end", "00:00", "--server", base,
                )  # fmt: skip
                assert code == 0, output
                assert (records_folder / "voicefsm-pg" / "data" / "PG_VERSION").exists()
                assert "started campaign 1: 6 numbers into Survey, 20 call/s, at most 2 at once" in output
                assert "campaign 1 (Survey, finished): 6/6 done, 0 dialing, 0 pending; answered 6" in output
                code, output = await asyncio.to_thread(cli, "campaign", "pause", "1", "--server", base)
                assert code == 0 and "campaign 1 (Survey, finished)" in output, output
                code, output = await asyncio.to_thread(cli, "campaign", "list", "--server", base)
                assert "answered 6" in output
                code, output = await asyncio.to_thread(cli, "campaign", "status", "7", "--server", base)
                assert code == 1 and "no campaign 7" in output
    assert len(twilio.created) == 6


async def test_a_bad_csv_is_named_before_anything_is_sent(tmp_path: Path) -> None:
    numbers = tmp_path / "numbers.csv"
    numbers.write_text("number\n+15551230001\n12\n")
    code, output = await asyncio.to_thread(
        cli, "campaign", "start", FLOW, str(numbers), "--server", "http://127.0.0.1:9"
    )
    assert code == 2
    assert "numbers.csv:3: '12' is not an E.164 number" in output


async def test_no_server_says_how_to_start_one(tmp_path: Path) -> None:
    code, output = await asyncio.to_thread(cli, "campaign", "list", "--server", "http://127.0.0.1:9")
    assert code == 1
    assert "no voicefsm server at http://127.0.0.1:9" in output and "voicefsm serve FLOW" in output
