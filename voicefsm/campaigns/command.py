"""``voicefsm campaign``: start, watch, pause, resume and cancel campaigns on a running ``voicefsm serve``.

The server does the dialing (every server process is a worker of the queue); this command checks the
flow and the CSV here, hands the campaign to the server's API and shows its progress. With no
database configured the server keeps campaigns in an embedded PostgreSQL; with ``--db
postgresql://...`` every server sharing that database dials, under one cap and one pace.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from voicefsm.campaigns.contacts import check_timezone, parse_contacts
from voicefsm.campaigns.errors import CampaignError
from voicefsm.campaigns.windows import CallingWindow
from voicefsm.flow import FlowDefinitionError, FlowLoadError
from voicefsm.flow.loader import load_flow

campaign_app = typer.Typer(
    name="campaign",
    help="Outbound campaigns: call a flow over a CSV of numbers, paced, capped, retried.",
    no_args_is_help=True,
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True)

ServerOpt = Annotated[
    str,
    typer.Option("--server", envvar="VOICEFSM_SERVER", help="The running `voicefsm serve` (its base URL)."),
]
IdArg = Annotated[int, typer.Argument(help="The campaign's id (`voicefsm campaign list`).")]
DEFAULT_SERVER = "http://127.0.0.1:8080"
#: The bearer token sent to a server that checks API tokens.
TOKEN_VARIABLE = "VOICEFSM_API_TOKEN"
POLL_S = 0.5
OUTCOME_COLOURS = {"answered": "green", "machine": "cyan", "busy": "yellow", "no-answer": "yellow"}


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def _request(server: str, method: str, path: str, **kwargs: Any) -> Any:
    url = f"{server.rstrip('/')}{path}"
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        answer = httpx.request(method, url, timeout=30, headers=headers, **kwargs)
    except httpx.HTTPError as error:
        raise _fail(
            f"no voicefsm server at {server} ({type(error).__name__}); start one with `voicefsm serve FLOW` "
            "or pass --server URL"
        ) from error
    if answer.status_code >= 400:
        try:
            detail = answer.json().get("detail", answer.text)
        except ValueError:
            detail = answer.text
        if answer.status_code in (401, 403) and not token:
            detail += (
                f"; the server wants an API token: set {TOKEN_VARIABLE} to one of its VOICEFSM_API_TOKENS"
            )
        raise _fail(f"{method} {path}: {detail}", 2 if answer.status_code in (409, 422, 503) else 1)
    return answer.json()


def _outcomes(counts: dict[str, int]) -> str:
    parts = [
        f"[{OUTCOME_COLOURS.get(name, 'red')}]{name} {count}[/]"
        for name, count in sorted(counts.items())
        if count
    ]
    return " · ".join(parts) or "no outcome yet"


def _line(state: dict[str, Any]) -> str:
    return (
        f"campaign {state['id']} ({escape(str(state['flow']))}, {state['state']}): "
        f"{state['done']}/{state['total']} done, {state['dialing']} dialing, {state['pending']} pending; "
        f"{_outcomes(state['outcomes'])}"
    )


def _follow(server: str, campaign_id: int) -> dict[str, Any]:
    """Show a progress bar until the campaign is finished or cancelled (Ctrl-C stops watching only)."""
    columns = (
        TextColumn("[bold]campaign {task.fields[id]}[/] {task.fields[state]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[outcomes]}"),
        TimeElapsedColumn(),
    )
    state: dict[str, Any] = _request(server, "GET", f"/api/campaigns/{campaign_id}")
    try:
        with Progress(*columns, console=out, transient=False) as bar:
            task = bar.add_task("calls", total=state["total"], id=campaign_id, state="", outcomes="")
            while True:
                bar.update(
                    task,
                    completed=state["done"],
                    state=state["state"],
                    outcomes=f"{state['dialing']} dialing · {_outcomes(state['outcomes'])}",
                )
                if state["state"] in ("finished", "cancelled"):
                    break
                time.sleep(POLL_S)
                state = _request(server, "GET", f"/api/campaigns/{campaign_id}")
    except KeyboardInterrupt:
        out.print(
            f"stopped watching; the campaign goes on. `voicefsm campaign pause {campaign_id}` pauses it, "
            f"`voicefsm campaign status {campaign_id} --follow` watches it again"
        )
        raise typer.Exit(130) from None
    return state


@campaign_app.command("start")
def start(
    flow_file: Annotated[str, typer.Argument(help="The flow the server serves (flows/survey.py).")],
    numbers: Annotated[
        Path, typer.Argument(help="CSV: a 'number' column (E.164), optional 'timezone', then slot values.")
    ],
    rate: Annotated[float, typer.Option(help="Calls started per second, across all workers.")] = 1.0,
    max_concurrent: Annotated[
        int, typer.Option("--max-concurrent", help="Calls in progress at once, across all workers.")
    ] = 2,
    max_attempts: Annotated[
        int, typer.Option("--max-attempts", help="Tries per number (busy, no answer, failed are retried).")
    ] = 3,
    retry_backoff: Annotated[
        float, typer.Option("--retry-backoff", help="Seconds before the first retry; doubled each time.")
    ] = 300.0,
    window_start: Annotated[
        str, typer.Option("--window-start", help="Earliest local time to call (HH:MM, the callee's zone).")
    ] = "09:00",
    window_end: Annotated[
        str, typer.Option("--window-end", help="Latest local time to call (HH:MM).")
    ] = "20:00",
    timezone: Annotated[
        str, typer.Option("--timezone", help="The time zone of rows without a 'timezone' value.")
    ] = "UTC",
    amd: Annotated[
        bool, typer.Option("--amd/--no-amd", help="Detect answering machines (async AMD).")
    ] = True,
    name: Annotated[str | None, typer.Option(help="A name to tell the campaign by.")] = None,
    flow: Annotated[
        str | None, typer.Option("--flow", help="The flow class, when the file has several.")
    ] = None,
    server: ServerOpt = DEFAULT_SERVER,
    detach: Annotated[
        bool, typer.Option("--detach", help="Start it and return; do not show progress.")
    ] = False,
) -> None:
    """Start a campaign of FLOW_FILE over the numbers in NUMBERS, then show its progress."""
    try:
        flow_class = load_flow(flow_file, flow)
    except (FlowDefinitionError, FlowLoadError) as error:
        raise _fail(str(error)) from error
    try:
        text = numbers.read_text(encoding="utf-8")
    except OSError as error:
        raise _fail(f"cannot read {numbers}: {error.strerror}") from error
    try:
        contacts = parse_contacts(text, str(numbers))
        CallingWindow.parse(window_start, window_end)
        check_timezone(timezone, "--timezone")
    except CampaignError as error:
        raise _fail(str(error), 2) from error
    body = {
        "flow": flow_class.__name__,
        "csv": text,
        "name": name or numbers.name,
        "source": str(numbers),
        "options": {
            "rate": rate,
            "max_concurrent": max_concurrent,
            "max_attempts": max_attempts,
            "retry_backoff_s": retry_backoff,
            "window_start": window_start,
            "window_end": window_end,
            "timezone": timezone,
            "machine_detection": amd,
        },
    }
    served = _request(server, "GET", "/api/flow").get("name") if not detach else None
    if served is not None and served != flow_class.__name__:
        raise _fail(
            f"the server at {server} serves {served}, not {flow_class.__name__}; start the campaign with the "
            "flow it serves, or serve this one",
            2,
        )
    state = _request(server, "POST", "/api/campaigns", json=body)
    out.print(
        f"started campaign {state['id']}: {len(contacts)} numbers into {flow_class.__name__}, "
        f"{rate:g} call/s, at most {max_concurrent} at once"
    )
    if detach:
        return
    out.print(_line(_follow(server, state["id"])))


@campaign_app.command("status")
def status(
    campaign_id: IdArg,
    server: ServerOpt = DEFAULT_SERVER,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Show a progress bar until it ends.")
    ] = False,
) -> None:
    """Counts of one campaign by state and outcome."""
    state = (
        _follow(server, campaign_id) if follow else _request(server, "GET", f"/api/campaigns/{campaign_id}")
    )
    out.print(_line(state))


@campaign_app.command("list")
def list_campaigns(server: ServerOpt = DEFAULT_SERVER) -> None:
    """Every campaign on the server, with its counts."""
    states = _request(server, "GET", "/api/campaigns")
    if not states:
        out.print("no campaigns yet; `voicefsm campaign start FLOW NUMBERS.csv` starts one")
    for state in states:
        out.print(_line(state))


def _control(action: str, campaign_id: int, server: str) -> None:
    state = _request(server, "POST", f"/api/campaigns/{campaign_id}/{action}")
    out.print(_line(state))


@campaign_app.command("pause")
def pause(campaign_id: IdArg, server: ServerOpt = DEFAULT_SERVER) -> None:
    """Start no new call (calls in progress go on) until `resume`."""
    _control("pause", campaign_id, server)


@campaign_app.command("resume")
def resume(campaign_id: IdArg, server: ServerOpt = DEFAULT_SERVER) -> None:
    """Dial the campaign's remaining numbers again."""
    _control("resume", campaign_id, server)


@campaign_app.command("cancel")
def cancel(campaign_id: IdArg, server: ServerOpt = DEFAULT_SERVER) -> None:
    """End the campaign: numbers not yet called end as cancelled (calls in progress go on)."""
    _control("cancel", campaign_id, server)
