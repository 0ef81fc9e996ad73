"""The ``voicefsm`` command: the only place that prints for the user and decides exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import sys
from collections.abc import AsyncIterable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from voicefsm import __version__
from voicefsm.errors import MissingStreamUrlError, ProviderUnavailable, TelephonyError, VoiceFsmError
from voicefsm.flow import (
    FlowDefinitionError,
    FlowLoadError,
    ResourceError,
    VoiceFlow,
    fakes_for,
    open_resources,
)
from voicefsm.flow.loader import load_flow
from voicefsm.settings import Settings

if TYPE_CHECKING:
    from voicefsm.runtime.flow_runtime import FlowListener, FlowResult

app = typer.Typer(
    name="voicefsm",
    help="Phone conversations as statecharts: serve, chat with, validate, draw and test flows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True)

FlowArg = Annotated[str, typer.Argument(help="The flow file (flows/booking.py) or module:Class.")]
FlowOpt = Annotated[str | None, typer.Option("--flow", help="The flow class, when the file defines several.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"voicefsm {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what each call does.")] = False,
) -> None:
    """voicefsm: phone conversations as statecharts."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code)


def _load(source: str, flow: str | None) -> type[VoiceFlow]:
    try:
        return load_flow(source, flow)
    except FlowDefinitionError as exc:
        raise _fail(f"{source} does not validate:\n{exc}") from exc
    except FlowLoadError as exc:
        raise _fail(str(exc)) from exc


def _settings(**overrides: object) -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise _fail(f"invalid settings (environment or .env): {problems}") from exc
    changes = {key: value for key, value in overrides.items() if value is not None}
    return settings.model_copy(update=changes) if changes else settings


def _fastest_event_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (it comes with uvicorn[standard]), else asyncio's default.

    The echo server used a quarter less CPU per call on it (8.7 -> 6.4 ms per call-second);
    see benchmarks/RESULTS.md.
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def serve(
    flow_file: FlowArg,
    flow: FlowOpt = None,
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default 127.0.0.1).")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default 8080, or VOICE_SERVER_PORT; 0 = any).")
    ] = None,
    public_url: Annotated[
        str | None, typer.Option("--public-url", help="The https URL Twilio reaches this server at.")
    ] = None,
    stt: Annotated[
        str | None, typer.Option(help="Speech-to-text provider: local, elevenlabs, azure, scripted.")
    ] = None,
    tts: Annotated[
        str | None, typer.Option(help="Text-to-speech provider: local, elevenlabs, azure, scripted.")
    ] = None,
    db: Annotated[
        str | None, typer.Option(help="Call records database URL (default SQLite voicefsm.db).")
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow a non-loopback host without a Twilio auth token.")
    ] = False,
) -> None:
    """Serve a flow: Twilio webhooks and media streams, the browser phone, the calls API."""
    from voicefsm.server.launch import plan
    from voicefsm.server.launch import serve as run_server

    settings = _settings(host=host, port=port, public_url=public_url, db_url=db, insecure=insecure or None)
    flow_class = _load(flow_file, flow)
    if settings.dev_mode and not _is_loopback(settings.host) and not settings.insecure:
        raise _fail(
            f"refusing to listen on {settings.host} without TWILIO_AUTH_TOKEN: nobody could verify that "
            "requests come from Twilio. Set TWILIO_AUTH_TOKEN, or pass --insecure for a trusted network.",
            2,
        )
    try:
        chosen = plan(settings, flow_class, stt=stt, tts=tts)
    except ProviderUnavailable as exc:
        raise _fail(str(exc), 2) from exc

    def ready(server: object) -> None:
        port_now = getattr(server, "port", settings.port)
        base = f"http://{settings.host}:{port_now}"
        out.print(f"[bold]voicefsm[/] serving [bold]{flow_class.__name__}[/] from {flow_file} on {base}")
        out.print(f"  browser phone  {base}/    call history  {base}/calls")
        out.print(f"  speech         STT {chosen.stt_name or 'none (echo)'} · TTS {chosen.tts_name}")
        out.print(f"  telephony      {chosen.telephony} · records {settings.db_url}")
        public = settings.public_base_url()
        if public:
            out.print("  Twilio console (Phone Numbers > your number > Voice configuration):")
            out.print(f"    A call comes in: Webhook  {public}/twilio/voice  HTTP POST")
            out.print(f"    Call status changes:      {public}/twilio/status  HTTP POST")
        else:
            out.print(
                "  To take phone calls: expose this port over https (e.g. `ngrok http "
                f"{port_now}`), then restart with --public-url https://<your-host> and TWILIO_AUTH_TOKEN set."
            )
        if settings.dev_mode:
            out.print(
                "  [yellow]dev mode[/]: no TWILIO_AUTH_TOKEN, so signatures are not checked (loopback only)"
            )
        sys.stdout.flush()

    with asyncio.Runner(loop_factory=_fastest_event_loop()) as runner:
        cut_short = runner.run(run_server(settings, chosen, on_ready=ready))
    if cut_short:
        err.print(f"stopped; {cut_short} call(s) were still running at the drain deadline and were ended")


@app.command()
def chat(
    flow_file: FlowArg,
    flow: FlowOpt = None,
    today: Annotated[
        str | None,
        typer.Option(
            "--today", help="Pretend today is YYYY-MM-DD, so 'next tuesday' means the same day every run."
        ),
    ] = None,
) -> None:
    """Talk to a flow in the terminal, as its caller: no audio, no account. Pipe a script into it to test."""
    from voicefsm.runtime.chat import ChatStuckError
    from voicefsm.transports.terminal import HELP, StdinLines

    try:
        day = dt.date.fromisoformat(today) if today is not None else None
    except ValueError as exc:
        raise _fail(f"--today {today!r} is not a date; write it as YYYY-MM-DD, e.g. 2024-06-03", 2) from exc
    flow_class = _load(flow_file, flow)
    interactive = sys.stdin.isatty()
    if interactive:
        out.print(f"[bold]voicefsm chat[/] with {flow_class.__name__} from {flow_file}")
        out.print(HELP, markup=False, style="dim")

    async def opened_chat() -> FlowResult:
        # The flow's resources (its calendar, its HTTP clients) are the real ones, as in `serve`,
        # or its declared fakes with VOICEFSM_FAKE_RESOURCES=1.
        settings = _settings()
        opened: contextlib.AbstractAsyncContextManager[Mapping[str, object]] = (
            contextlib.nullcontext(fakes_for(flow_class))
            if settings.fake_resources
            else open_resources(flow_class, settings)
        )
        async with opened as resources:
            return await chat_session(
                flow_class, StdinLines(), out, today=day, interactive=interactive, resources=resources
            )

    try:
        result = asyncio.run(opened_chat())
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except (ChatStuckError, ResourceError) as exc:
        raise _fail(str(exc)) from exc
    if result.outcome == "error":
        raise typer.Exit(1)


async def chat_session(
    flow_class: type[VoiceFlow],
    lines: AsyncIterable[str],
    console: Console,
    *,
    today: dt.date | None = None,
    interactive: bool = False,
    listeners: Sequence[FlowListener] = (),
    resources: Mapping[str, object] | None = None,
) -> FlowResult:
    """One call to ``flow_class`` on the terminal line, fed by ``lines`` and shown on ``console``."""
    from voicefsm.runtime.chat import ChatLine
    from voicefsm.transports.terminal import TerminalView

    view = TerminalView(console, interactive=interactive)
    line = ChatLine(flow_class, view, today=today, listeners=listeners, resources=resources)
    result = await line.run(lines)
    view.summary(
        outcome=result.outcome, final_state=result.final_state, slots=result.slots, ended_by=line.ended_by
    )
    return result


@app.command()
def validate(
    flow_file: FlowArg,
    flow: FlowOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the flow spec, or the problems, as JSON.")
    ] = False,
) -> None:
    """Check a flow: every state reachable, none can wait forever, templates and events declared."""
    from voicefsm.flow.spec import FlowSpec

    try:
        flow_class = load_flow(flow_file, flow)
    except FlowDefinitionError as exc:
        if as_json:
            problems = [
                {
                    "path": p.path,
                    "line": p.line,
                    "flow": p.flow,
                    "state": p.state,
                    "event": p.event,
                    "message": p.message,
                    "fix": p.fix,
                }
                for p in exc.problems
            ]
            out.print_json(json.dumps({"valid": False, "problems": problems}))
            raise typer.Exit(1) from exc
        raise _fail(f"{flow_file} does not validate:\n{exc}") from exc
    except FlowLoadError as exc:
        if as_json:
            out.print_json(json.dumps({"valid": False, "problems": [{"message": str(exc)}]}))
            raise typer.Exit(1) from exc
        raise _fail(str(exc)) from exc
    spec = FlowSpec.of(flow_class)
    if as_json:
        out.print_json(json.dumps({"valid": True, "spec": spec.model_dump(mode="json")}))
        return
    written = [s for s in spec.states if not s.default]
    out.print(
        f"[green]ok[/] {flow_class.__name__} ({flow_file}): {len(written)} states, "
        f"{len(spec.transitions)} transitions; every state is reachable and none can wait forever"
    )


@app.command()
def graph(
    flow_file: FlowArg,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Where to write: .mmd, .md, .dot, .svg or .png.")
    ],
    flow: FlowOpt = None,
    defaults: Annotated[
        bool, typer.Option(help="Include the default exits (hang-up, provider failure) every flow gets.")
    ] = False,
) -> None:
    """Draw a flow's statechart. Mermaid needs nothing installed; SVG and PNG need Graphviz."""
    from voicefsm.flow.errors import GraphUnavailableError
    from voicefsm.flow.graph import render

    formats = {
        ".mmd": "mermaid",
        ".mermaid": "mermaid",
        ".md": "md",
        ".dot": "dot",
        ".svg": "svg",
        ".png": "png",
    }
    fmt = formats.get(output.suffix.lower())
    if fmt is None:
        raise _fail(f"cannot tell the format from {output.name}; use one of {', '.join(formats)}", 2)
    flow_class = _load(flow_file, flow)
    try:
        drawing = render(flow_class, fmt, defaults=defaults)  # type: ignore[arg-type]
    except GraphUnavailableError as exc:
        raise _fail(f"{exc}. A .mmd (Mermaid) diagram needs nothing installed.") from exc
    if isinstance(drawing, bytes):
        output.write_bytes(drawing)
    else:
        output.write_text(drawing, encoding="utf-8")
    out.print(f"wrote {output} ({fmt})")


@app.command(name="test")
def run_tests(
    flow_file: FlowArg,
    flow: FlowOpt = None,
    scenarios: Annotated[
        Path | None,
        typer.Option("--scenarios", help="The scenario file (default: FLOW.scenarios.yaml beside the flow)."),
    ] = None,
    faults: Annotated[
        bool,
        typer.Option(
            "--faults",
            help="Also break every reachable state (hang-up, TTS/STT failure, silence, garbage) and "
            "explore random callers: every call must end, with no task left.",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object: results and coverage.")
    ] = False,
) -> None:
    """Run a flow's scenario files and report coverage; with --faults, the generated fault runs too."""
    from voicefsm.testing import (
        ScenarioFileError,
        explore,
        load_scenarios,
        run_fault_suite,
        run_scenario_file,
        scenarios_path_for,
    )
    from voicefsm.testing.report import print_faults, print_scenarios

    source = Path(flow_file.split(":", 1)[0])
    path = scenarios or scenarios_path_for(source)
    if scenarios is not None and not scenarios.exists():
        raise _fail(f"no such scenario file: {scenarios}")
    if not path.exists() and not faults:
        _load(flow_file, flow)  # a flow that does not load is the first thing to fix
        raise _fail(
            f"no scenario file for {flow_file}: expected {path}. Write one (the format: "
            "python -m pydoc voicefsm.testing.scenarios), pass --scenarios FILE, or run only the "
            "generated fault runs with --faults"
        )
    scenario_file = None
    if path.exists():
        try:
            scenario_file = load_scenarios(path)
        except ScenarioFileError as exc:
            raise _fail(escape(str(exc))) from exc
    named = flow or (scenario_file.flow if scenario_file and ":" not in flow_file else None)
    flow_class = _load(flow_file, named)
    today = scenario_file.today if scenario_file else None  # what "tomorrow" means, for the faults too
    logging.disable(logging.CRITICAL)  # the faults are on purpose; the report says what happened
    try:
        passed = True
        result: dict[str, object] = {"flow": flow_class.__name__}
        if scenario_file is not None:
            report = asyncio.run(run_scenario_file(flow_class, scenario_file, path))
            passed = report.passed
            result.update(report.to_json())
            if not as_json:
                print_scenarios(out, report)
        if faults:
            fault_report = run_fault_suite(flow_class, today=today)
            explored = explore(flow_class, today=today)
            passed = passed and fault_report.passed and explored.passed
            result["faults"] = fault_report.to_json()
            result["explore"] = explored.to_json()
            if not as_json:
                print_faults(out, fault_report, explored)
    finally:
        logging.disable(logging.NOTSET)
    result["passed"] = passed
    if as_json:
        out.print_json(json.dumps(result, default=str))
    if not passed:
        raise typer.Exit(1)


@app.command()
def call(
    number: Annotated[str, typer.Argument(help="The number to call, in E.164 form (+15551230001).")],
    flow_file: FlowArg,
    flow: FlowOpt = None,
    public_url: Annotated[
        str | None, typer.Option("--public-url", help="The https URL of the running `voicefsm serve`.")
    ] = None,
    amd: Annotated[bool, typer.Option("--amd", help="Detect answering machines.")] = False,
) -> None:
    """Place an outbound call that runs the flow served at --public-url (a running `voicefsm serve`)."""
    from voicefsm.telephony.twilio.rest import TwilioRest
    from voicefsm.telephony.twilio.twiml import redirect_twiml

    settings = _settings(public_url=public_url)
    flow_class = _load(flow_file, flow)
    base = settings.public_base_url()
    if base is None:
        raise _fail(str(MissingStreamUrlError()), 2)
    try:
        rest = TwilioRest.from_settings(settings)
    except TelephonyError as exc:
        raise _fail(str(exc), 2) from exc
    twiml = redirect_twiml(f"{base}/twilio/voice")
    try:
        placed = asyncio.run(
            rest.place_call(number, twiml, status_callback=f"{base}/twilio/status", machine_detection=amd)
        )
    except VoiceFsmError as exc:
        raise _fail(str(exc)) from exc
    out.print(
        f"calling {number[:-4] + '****' if len(number) > 4 else number} into {flow_class.__name__}: "
        f"{placed.call_sid} ({placed.status})"
    )


def main() -> None:
    """Entry point of the ``voicefsm`` console script."""
    app()
