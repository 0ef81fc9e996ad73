"""The ``voicefsm`` command: the only place that prints for the user and decides exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import json
import logging
import os
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
from voicefsm.flow.resources import declared_resources
from voicefsm.observability.logs import LOG_FORMATS, configure_logging
from voicefsm.observability.tracing import OtelUnavailableError, check_tracing_available
from voicefsm.settings import Settings

if TYPE_CHECKING:
    from voicefsm.runtime.flow_runtime import FlowListener, FlowResult

app = typer.Typer(
    name="voicefsm",
    help="Phone conversations as statecharts: start, serve, chat with, validate, draw and test flows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: no "<bool>" after every flag
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True)

FlowArg = Annotated[
    str, typer.Argument(metavar="FLOW", help="The flow file (flows/booking.py) or module:Class.")
]
FlowsArg = Annotated[
    str,
    typer.Argument(
        metavar="FLOW", help="The flow file (flows/booking.py), module:Class, or a folder of flow files."
    ),
]
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
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            help="Log lines as text (default) or json: one object a line, with the call SID "
            "(or VOICEFSM_LOG_FORMAT).",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Worker processes taking calls on this port (records must be PostgreSQL when > 1).",
        ),
    ] = 1,
) -> None:
    """Serve a flow: Twilio webhooks and media streams, the browser phone, the calls API."""
    if log_format is not None and log_format not in LOG_FORMATS:
        raise _fail(
            f"--log-format {log_format!r} is not one of: {', '.join(LOG_FORMATS)} (e.g. --log-format json)", 2
        )
    settings = _settings(
        host=host,
        port=port,
        public_url=public_url,
        db_url=db,
        insecure=insecure or None,
        log_format=log_format,
    )
    _serve_logging(settings)
    # After the log set-up: importing the records (alembic) already logs.
    from voicefsm.records import RecordsError, masked
    from voicefsm.server.preflight import ConfigurationError, check_configuration

    flow_class = _load(flow_file, flow)
    from voicefsm.server.workers import supervised

    handed = supervised(os.environ)  # this process is one of a `serve --workers N` supervisor's
    try:
        # Refuse what would fail at call time (server/preflight.py), before the server's heavy imports.
        # A supervised worker's port is the supervisor's, bound already: it checked it.
        checked = settings if handed is None else settings.model_copy(update={"port": 0})
        check_configuration(checked, stt=stt, tts=tts, uses_stt=bool(flow_class.uses_stt))
        from voicefsm.server.launch import plan
        from voicefsm.server.launch import serve as run_server
        from voicefsm.server.prompt_warmup import WarmProgress, progress_printer

        chosen = plan(settings, flow_class, stt=stt, tts=tts)
        if settings.otel_endpoint:
            check_tracing_available()
    except (ProviderUnavailable, ConfigurationError, OtelUnavailableError) as exc:
        raise _fail(escape(str(exc)), 2) from exc
    if workers > 1 and handed is None:
        _check_shared_records(settings, workers)

    def ready(server: object) -> None:
        port_now = getattr(server, "port", settings.port)
        base = f"http://{settings.host}:{port_now}"
        out.print(f"[bold]voicefsm[/] serving [bold]{flow_class.__name__}[/] from {flow_file} on {base}")
        out.print(f"  browser phone  {base}/    call history  {base}/calls")
        out.print(f"  speech         STT {chosen.stt_name or 'none (echo)'} · TTS {chosen.tts_name}")
        out.print(f"  telephony      {chosen.telephony} · records {escape(masked(settings.db_url))}")
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
        fakes = sorted(declared_resources(flow_class)) if settings.fake_resources else []
        if fakes:
            out.print(
                f"  [yellow]fake resources[/]: {', '.join(fakes)} (VOICEFSM_FAKE_RESOURCES is set): "
                "calls use the flow's declared fakes, nothing real is called"
            )
        sys.stdout.flush()

    if workers > 1 and handed is None:
        raise typer.Exit(_supervise(settings, workers, ready))
    on_ready: Callable[[object], None] = ready
    progress: WarmProgress | None = progress_printer()
    if handed is not None:  # the supervisor prints the banner once every worker is listening
        handed.watch_supervisor()
        on_ready = handed.ready_with
        progress = progress if handed.index == 1 else None  # one worker shows the prompts warming
    try:
        with asyncio.Runner(loop_factory=_fastest_event_loop()) as runner:
            sock = handed.sock if handed is not None else None
            serving = run_server(settings, chosen, on_ready=on_ready, on_progress=progress, sock=sock)
            cut_short = runner.run(serving)
    except RecordsError as exc:  # the records' URL, database or schema: one line, the fix in it
        raise _fail(escape(str(exc)), 2) from exc
    except OSError as exc:
        raise _fail(_listen_failure(exc, settings.host, settings.port), 2) from None
    if cut_short:
        err.print(f"stopped; {cut_short} call(s) were still running at the drain deadline and were ended")


def _serve_logging(settings: Settings) -> None:
    """serve's log lines: text or JSON (VOICEFSM_LOG_FORMAT), the call SID on each line of a call.

    Phone numbers and the settings' secrets (auth tokens, API keys) are masked wherever they appear.
    """
    root = logging.getLogger()
    secrets = [
        secret.get_secret_value()
        for secret in (
            settings.twilio_auth_token,
            settings.twilio_auth_token_secondary,
            settings.elevenlabs_api_key,
            settings.azure_speech_key,
            settings.api_tokens,
            settings.secret_key,
        )
        if secret is not None
    ]
    if settings.api_tokens is not None:
        secrets += [token.strip() for token in settings.api_tokens.get_secret_value().split(",")]
    configure_logging(settings.log_format, level=root.level or logging.WARNING, secrets=secrets)


def _check_shared_records(settings: Settings, workers: int) -> None:
    """Refuse ``--workers N`` on SQLite (one file, not a database N processes or hosts share safely), or
    on records that cannot be opened."""
    from voicefsm.records import DatabaseUrlError, database_url, masked

    try:
        backend = database_url(settings.db_url).get_backend_name()
    except DatabaseUrlError as exc:
        raise _fail(escape(str(exc)), 2) from exc
    if backend == "sqlite":
        raise _fail(
            f"--workers {workers} needs the call records in PostgreSQL, which every worker shares; "
            f"{escape(masked(settings.db_url))} is a SQLite file. Pass --db postgresql://USER@HOST/DB "
            "(or set VOICEFSM_DB_URL; run `voicefsm db upgrade --db ...` once), or serve with --workers 1",
            2,
        )
    # Open the records once here, so that an unreachable database or a schema behind is one line, not
    # one per worker (and a new database is created by one process).
    from voicefsm.records import CallStore, RecordsError

    async def opened() -> None:
        store = await CallStore.open(settings.db_url)
        await store.aclose()

    try:
        asyncio.run(opened())
    except RecordsError as exc:
        raise _fail(escape(str(exc)), 2) from exc


def _supervise(settings: Settings, workers: int, ready: Callable[[object], None]) -> int:
    """Bind the port, run ``workers`` copies of this command on it, print the banner once they listen."""
    import socket

    from voicefsm.server.serving import RunningServer
    from voicefsm.server.workers import listening_socket, supervise, worker_names

    try:
        sock = listening_socket(settings.host, settings.port)
    except OSError as exc:
        raise _fail(_listen_failure(exc, settings.host, settings.port), 2) from None
    port = sock.getsockname()[1]
    names = worker_names(settings.worker_name or f"{socket.gethostname()}:{port}", workers)
    # The same command, less --workers and --port (the workers accept on the supervisor's socket).
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg in ("--workers", "--port"):
            skip = True
        elif not arg.startswith(("--workers=", "--port=")):
            args.append(arg)
    os.environ["VOICEFSM_PORT"] = os.environ["VOICE_SERVER_PORT"] = str(port)
    os.environ["VOICEFSM_DB_URL"] = settings.db_url  # in the environment, not on a command line

    def all_listening() -> None:
        ready(RunningServer(settings.host, port))
        out.print(f"  workers        {workers} processes on this port: {names[0]} ... {names[-1]}")
        sys.stdout.flush()

    return supervise([sys.executable, "-m", "voicefsm", *args], sock, names, all_listening)


def _listen_failure(exc: OSError, host: str, port: int) -> str:
    """One line for a server that could not listen: what, where, and the option that fixes it."""
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {host}:{port}: the port is in use (another `voicefsm serve`?). "
            f"Pick another with --port {port + 1 if port else 8081} (or VOICE_SERVER_PORT), "
            "or stop the other server"
        )
    if exc.errno == errno.EACCES:
        return f"cannot listen on {host}:{port}: permission denied; use a port above 1023, e.g. --port 8080"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}:{port}: this machine has no such address; check --host"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


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
    flow_file: FlowsArg,
    flow: FlowOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the flow spec, or the problems, as JSON.")
    ] = False,
) -> None:
    """Check a flow (or every flow in a folder): every state reachable, none can wait forever."""
    if Path(flow_file).is_dir():
        _validate_folder(Path(flow_file), as_json)
        return
    try:
        flow_class = load_flow(flow_file, flow)
    except FlowDefinitionError as exc:
        if as_json:
            out.print_json(json.dumps({"valid": False, "problems": _problems(exc)}))
            raise typer.Exit(1) from None
        raise _fail(f"{flow_file} does not validate:\n{exc}") from None
    except FlowLoadError as exc:
        if as_json:
            out.print_json(json.dumps({"valid": False, "problems": [{"message": str(exc)}]}))
            raise typer.Exit(1) from None
        raise _fail(str(exc)) from None
    if as_json:
        out.print_json(json.dumps({"valid": True, "spec": _spec_json(flow_class)}))
        return
    out.print(_valid_line(flow_class, flow_file))


def _problems(exc: FlowDefinitionError) -> list[dict[str, object]]:
    return [
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


def _spec_json(flow_class: type[VoiceFlow]) -> dict[str, object]:
    from voicefsm.flow.spec import FlowSpec

    return FlowSpec.of(flow_class).model_dump(mode="json")


def flow_counts(flow_class: type[VoiceFlow]) -> dict[str, int]:
    """What validate, coverage and the browser phone count, one way.

    A state is a state written in the flow; a transition is one (source, event, target) the flow
    writes (``a.to(b) | a.to(c)`` on ``filled`` is two; one ``.to`` on two events is two). The
    states and exits every flow gets (``hung_up``, ``failed`` and the exits into them) are counted
    apart as ``default_states`` and ``default_transitions``.
    """
    from voicefsm.flow.spec import FlowSpec

    spec = FlowSpec.of(flow_class)
    written: dict[tuple[str, str, str], None] = {}
    added: dict[tuple[str, str, str], None] = {}
    for transition in spec.transitions:
        target = transition.target or transition.source
        for event in transition.events:
            (added if transition.default else written)[(transition.source, event, target)] = None
    return {
        "states": sum(not state.default for state in spec.states),
        "transitions": len(written),
        "default_states": sum(state.default for state in spec.states),
        "default_transitions": len(added),
    }


def _valid_line(flow_class: type[VoiceFlow], shown: str) -> str:
    counts = flow_counts(flow_class)
    return (
        f"[green]ok[/] {flow_class.__name__} ({shown}): {_many(counts['states'], 'state')}, "
        f"{_many(counts['transitions'], 'transition')} (+{counts['default_states']} states and "
        f"{counts['default_transitions']} exits every flow gets); "
        "every state is reachable and none can wait forever"
    )


def _many(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _validate_folder(folder: Path, as_json: bool) -> None:
    """One result per flow in ``folder``: a line each (or one JSON list); exit 1 if any fails."""
    from voicefsm.flow.loader import flow_files_in, load_flows_in_file

    files = flow_files_in(folder)
    if not files:
        raise _fail(f"{folder} has no Python files to check; give a flow file or a folder of them")
    results: list[dict[str, object]] = []
    for path in files:
        try:
            found = load_flows_in_file(path)
        except FlowDefinitionError as exc:
            results.append({"path": str(path), "valid": False, "problems": _problems(exc)})
            if not as_json:
                err.print(f"[bold red]error:[/] {path} does not validate:\n{exc}", soft_wrap=True)
            continue
        except FlowLoadError as exc:
            results.append({"path": str(path), "valid": False, "problems": [{"message": str(exc)}]})
            if not as_json:
                err.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
            continue
        for flow_class in found:
            results.append({"path": str(path), "flow": flow_class.__name__, "valid": True})
            if not as_json:
                out.print(_valid_line(flow_class, str(path)))
    failed = sum(not result["valid"] for result in results)
    if as_json:
        out.print_json(json.dumps({"valid": not failed, "flows": results}))
    elif not any(result["valid"] for result in results) and not failed:
        raise _fail(f"no flow in {folder}: none of its files defines a VoiceFlow subclass")
    else:
        out.print(f"{len(results) - failed} of {len(results)} checked in {folder} valid")
    if failed:
        raise typer.Exit(1)


@app.command()
def graph(
    flow_file: FlowArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="Where to write: .mmd, .md, .dot, .svg or .png (default: Mermaid to stdout).",
        ),
    ] = None,
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
    fmt = formats.get(output.suffix.lower()) if output is not None else "mermaid"
    if fmt is None:
        assert output is not None
        raise _fail(f"cannot tell the format from {output.name}; use one of {', '.join(formats)}", 2)
    flow_class = _load(flow_file, flow)
    try:
        drawing = render(flow_class, fmt, defaults=defaults)  # type: ignore[arg-type]
    except GraphUnavailableError as exc:
        raise _fail(f"{exc}. A .mmd (Mermaid) diagram needs nothing installed.") from exc
    if output is None:
        sys.stdout.write(drawing if isinstance(drawing, str) else drawing.decode())
        return
    if isinstance(drawing, bytes):
        output.write_bytes(drawing)
    else:
        output.write_text(drawing, encoding="utf-8")
    out.print(f"wrote {output} ({fmt})")


@app.command(name="test")
def run_tests(
    flow_file: FlowsArg,
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
    """Run a flow's scenarios (or those of every flow in a folder) and report coverage.

    With --faults, the generated fault runs too.
    """
    if Path(flow_file).is_dir():
        if scenarios is not None or flow is not None:
            raise _fail("--scenarios and --flow name one flow; give a flow file with them, not a folder", 2)
        _test_folder(Path(flow_file), faults=faults, as_json=as_json)
        return
    passed, result = _test_flow(flow_file, flow, scenarios, faults=faults, as_json=as_json)
    if as_json:
        out.print_json(json.dumps(result, default=str))
    if not passed:
        raise typer.Exit(1)


def _test_folder(folder: Path, *, faults: bool, as_json: bool) -> None:
    """Test every flow file in ``folder`` that has scenarios (every flow file, with --faults)."""
    from voicefsm.flow.loader import flow_files_in
    from voicefsm.testing import scenarios_path_for

    candidates = flow_files_in(folder)
    files = [path for path in candidates if faults or scenarios_path_for(path).exists()]
    untested = [path.name for path in candidates if path not in files]
    if untested and files and not as_json:
        out.print(f"[dim]no scenario file beside {', '.join(untested)}: not tested (--faults tests them)[/]")
    if not files:
        raise _fail(
            f"no flow file in {folder} has a scenario file beside it (booking.py -> booking.scenarios.yaml); "
            "write one, or run the generated fault runs alone with --faults"
        )
    results: list[dict[str, object]] = []
    for path in files:
        if not as_json:
            out.print(f"[bold]{path}[/]")
        try:
            _, result = _test_flow(str(path), None, None, faults=faults, as_json=as_json)
        except typer.Exit:  # the reason is printed already
            result = {"passed": False}
        results.append({"path": str(path), **result})
    failed = sum(not result["passed"] for result in results)
    if as_json:
        out.print_json(json.dumps({"passed": not failed, "flows": results}, default=str))
    else:
        out.print(f"{len(results) - failed} of {len(results)} flows in {folder} passed")
    if failed:
        raise typer.Exit(1)


def _test_flow(
    flow_file: str, flow: str | None, scenarios: Path | None, *, faults: bool, as_json: bool
) -> tuple[bool, dict[str, object]]:
    """Run one flow's scenarios (and fault runs): whether it passed, and the JSON result."""
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
    return passed, result


@app.command()
def new(
    name: Annotated[
        Path, typer.Argument(metavar="NAME", help="The folder to create; the flow module is named after it.")
    ],
) -> None:
    """Start a project: a flow, its scenario file, a pytest test and a README, all passing as written."""
    from voicefsm.scaffold import ScaffoldError, create_project

    try:
        written = create_project(name)
    except ScaffoldError as exc:
        raise _fail(str(exc), 2) from None
    out.print(f"created {name}/ with {', '.join(path.name for path in written)}")
    out.print(f"  cd {name} && voicefsm test .      (then: voicefsm chat {written[0].name})")


@app.command()
def prompts(
    flow_file: FlowArg,
    flow: FlowOpt = None,
    warm: Annotated[
        bool, typer.Option("--warm", help="Synthesize them into the prompt cache and show each one's length.")
    ] = False,
    tts: Annotated[
        str | None, typer.Option(help="Text-to-speech provider: local, elevenlabs, azure (as serve chooses).")
    ] = None,
) -> None:
    """List a flow's fixed prompts; with --warm, cache their audio ahead of deployment, as serve does."""
    from voicefsm.server.prompt_warmup import print_prompts

    flow_class = _load(flow_file, flow)
    if not print_prompts(out, _settings(), flow_class, warm=warm, tts=tts):
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


db_app = typer.Typer(
    name="db", help="The call records database: create or upgrade its schema.", no_args_is_help=True
)
app.add_typer(db_app)


@db_app.command("upgrade")
def db_upgrade(
    db: Annotated[
        str | None,
        typer.Option(help="Call records database URL (default VOICEFSM_DB_URL, else SQLite voicefsm.db)."),
    ] = None,
) -> None:
    """Create or upgrade the call records' tables to this voicefsm's schema (once per deploy)."""
    from voicefsm.records import RecordsError, masked, upgrade_database

    settings = _settings(db_url=db)
    try:
        report = asyncio.run(upgrade_database(settings.db_url))
    except RecordsError as exc:
        raise _fail(escape(str(exc)), 2) from exc
    out.print(escape(report.describe(masked(settings.db_url))))


from voicefsm.campaigns.command import campaign_app  # noqa: E402 (a self-contained sub-app)

app.add_typer(campaign_app)


def main() -> None:
    """Entry point of the ``voicefsm`` console script."""
    app()
