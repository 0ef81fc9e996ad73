"""MkDocs hook: reference pages generated from the code, so they cannot drift from it.

A page asks for a generated section with an HTML comment on a line of its own:

- ``<!-- reference: cli -->``: every command of ``voicefsm`` with its usage, arguments and options,
  from the same click object ``voicefsm --help`` prints (typer's app, as click sees it);
- ``<!-- reference: settings -->``: every field of ``voicefsm.settings.Settings``, its environment
  variables and default; a field without a meaning in SETTING_MEANINGS fails the strict build;
- ``<!-- reference: scenario-steps -->``: the scenario file's steps and fields, from its models;
- ``<!-- reference: state-kinds -->`` / ``<!-- reference: expectations -->``: an mkdocstrings
  entry for every state kind / expectation that ``voicefsm.flow`` exports (new kinds appear alone).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import typer.main
from pydantic import BaseModel
from pydantic.fields import FieldInfo

log = logging.getLogger("mkdocs.hooks.reference")

MARKER = re.compile(r"^<!-- reference: (?P<what>[\w-]+) -->$", re.MULTILINE)

SETTING_MEANINGS: dict[str, str] = {
    "host": "the interface `serve` listens on; a non-loopback one needs `TWILIO_AUTH_TOKEN` or `--insecure`",
    "port": "the port `serve` listens on (0: any free port)",
    "public_url": "the public https base URL Twilio reaches this server at",
    "voice_stream_url": "the wss URL of the media stream, when it differs from the public URL's",
    "insecure": "allow a non-loopback host without a Twilio auth token (a trusted network only)",
    "max_concurrent_calls": "calls served at once; the next caller hears a busy signal",
    "drain_timeout_s": "on SIGTERM, how long live calls may go on before they are ended",
    "stream_idle_timeout_s": "a media stream that sends nothing this long is ended",
    "db_url": "call records: SQLite by default, PostgreSQL with `postgresql+asyncpg://…`",
    "recordings_dir": "where call recordings (WAV) go; empty: no recordings",
    "voice_monitor": "play calls live through ffplay",
    "stt_provider": "speech-to-text provider name; default: the one whose credentials are set, else `local`",
    "tts_provider": "text-to-speech provider name; default: the one whose credentials are set, else `local`",
    "language": "the language of the local recognizer and voice",
    "twilio_account_sid": "Twilio account SID (for `voicefsm call` and call control)",
    "twilio_auth_token": "Twilio auth token: with it, every webhook and stream must be signed by Twilio",
    "twilio_auth_token_secondary": "a second auth token accepted while rotating tokens",
    "twilio_phone_number": "the caller id of outbound calls",
    "twilio_region": "Twilio region for the REST API",
    "twilio_edge": "Twilio edge location for the REST API",
    "twilio_api_base": "another base URL for Twilio's REST API (tests, proxies)",
    "twilio_timeout_s": "timeout of one Twilio REST request",
    "elevenlabs_api_key": "ElevenLabs API key (`pip install 'voicefsm[elevenlabs]'`)",
    "elevenlabs_voice_id": "ElevenLabs voice",
    "elevenlabs_model": "ElevenLabs text-to-speech model",
    "elevenlabs_base_url": "another base URL for ElevenLabs (tests, proxies)",
    "elevenlabs_timeout_s": "timeout of one ElevenLabs request",
    "stt_model_id": "ElevenLabs speech-to-text model",
    "stt_language_code": "ElevenLabs speech-to-text language (default: detected)",
    "stt_vad_silence_threshold_s": "ElevenLabs: silence that ends a caller's turn",
    "stt_vad_threshold": "ElevenLabs: voice activity threshold",
    "azure_speech_key": "Azure Speech key (`pip install 'voicefsm[azure]'`)",
    "azure_speech_region": "Azure Speech region",
    "azure_speech_host": "Azure Speech host (containers, proxies)",
    "azure_speech_endpoint": "Azure Speech endpoint URL (custom endpoints)",
    "azure_tts_voice": "Azure neural voice",
    "azure_stt_language": "Azure recognition language",
    "azure_silence_timeout_ms": "Azure: silence that ends a caller's turn",
    "api_tokens": "API tokens (comma-separated) for `Authorization: Bearer`, the page login and `/metrics`",
    "api_tokens_file": "a file with one API token a line, re-read when it changes (rotation without restart)",
    "secret_key": "the key that signs login session cookies (default: a random one per process)",
    "session_max_age_s": "how long a page login lasts",
    "cookie_secure": "send the session cookie over https only (turn off only behind plain-http test setups)",
    "tts_fallback": "the TTS provider that speaks a prompt when the chosen one failed twice (e.g. `local`)",
    "tts_deadline_s": "the longest wait for a TTS provider's next audio chunk before it counts as failed",
    "prompt_cache": "cache synthesized prompt audio (memory and disk)",
    "prompt_cache_dir": "the on-disk prompt cache, shared by workers on one host (empty: memory only)",
    "prompt_cache_memory_mb": "the in-memory prompt cache's size bound",
    "prompt_cache_filled": "how many templated prompts (slots filled in) the memory cache keeps",
    "prompt_warm": "synthesize every fixed prompt of the flow before `serve` reports ready",
    "prompt_warm_concurrency": "how many prompts the warm-up synthesizes at once",
}


SCENARIO_MEANINGS: dict[str, str] = {
    "ScenarioFile.today": 'what "today" is for every scenario (so "tomorrow" is the same day every run)',
    "ScenarioFile.scenarios": "the scenarios, each a scripted call; names are unique",
    "Scenario.name": "what the scenario shows; the report names it",
    "Scenario.today": 'this scenario\'s own "today"',
    "Scenario.caller": "the caller's number (`null`: withheld), `{caller}` in prompts",
    "Scenario.steps": "what happens on the line, in order",
    "Scenario.expect": "what must hold when the call has ended",
    "Expect.outcome": "the call's outcome: `completed`, `hung_up`, `failed` or an ending's `outcome=`",
    "Expect.final_state": "the state the call ended in",
    "Expect.path": "every state entered, in order, from the initial one",
    "Expect.slots": 'slot values (`"10:30"` matches a time, `2024-06-11` a date); others are not checked',
}


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace each reference marker of a page with its generated Markdown."""
    return MARKER.sub(lambda found: GENERATORS[found["what"]](), markdown)


# -- the command line ------------------------------------------------------------------------


def cli_reference() -> str:
    from voicefsm.cli import app

    root: Any = typer.main.get_command(app)  # a click Group (typer ships its own copy of click)
    parent = root.context_class(root, info_name="voicefsm")
    parts = ["Options before the command (`voicefsm -v serve ...`):", ""]
    parts += ["| option | what it does |", "|---|---|"]
    parts += [_param_row(param, parent) for param in root.params if param.name != "help"]
    for name, command in root.commands.items():
        context = command.context_class(command, info_name=name, parent=parent)
        parts += [
            "",
            f"## `voicefsm {name}`",
            "",
            _text(command.help or ""),
            "",
            "```text",
            command.get_usage(context).replace("{", "").replace("}", ""),
            "```",
            "",
            "| argument or option | what it does |",
            "|---|---|",
        ]
        parts += [_param_row(param, context) for param in command.params if param.name != "help"]
    return "\n".join(parts) + "\n"


def _param_row(param: Any, context: Any) -> str:
    record = param.get_help_record(context)
    if record is None:
        return ""
    name, help_text = record
    return f"| `{name}` | {_text(help_text).replace('|', '&#124;')} |"


def _text(text: str) -> str:
    return " ".join(text.split())


# -- settings --------------------------------------------------------------------------------


def settings_reference() -> str:
    from voicefsm.settings import Settings

    rows = ["| environment variable | default | meaning |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        meaning = info.description or SETTING_MEANINGS.get(name)
        if meaning is None:
            log.warning(
                "setting %s has no meaning: add it to SETTING_MEANINGS in docs/hooks/reference.py", name
            )
            meaning = ""
        names = " or ".join(f"`{env}`" for env in _env_names(name, info))
        rows.append(f"| {names} | {_default(info)} | {meaning} |")
    return "\n".join(rows) + "\n"


def _env_names(name: str, info: FieldInfo) -> list[str]:
    alias = info.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        return [str(choice) for choice in choices]
    return [str(alias or name).upper()]


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default is None:
        return "unset"
    return f"`{info.default}`"


# -- scenario files --------------------------------------------------------------------------


def scenario_reference() -> str:
    from voicefsm.testing.scenarios import BARE_STEPS, Expect, Scenario, ScenarioFile, Step

    def table(model: type[BaseModel], heading: str, how: str) -> list[str]:
        rows = ["", f"### {heading}", "", how, "", "| field | type | meaning |", "|---|---|---|"]
        for name, info in model.model_fields.items():
            kind = "bare word" if name in BARE_STEPS else _type_name(info)
            meaning = info.description or SCENARIO_MEANINGS.get(f"{model.__name__}.{name}")
            if meaning is None and model is Step:
                log.warning("scenario step %s has no description: give its Field a description", name)
            rows.append(f"| `{name}` | {kind} | {meaning or ''} |")
        return rows

    parts = table(ScenarioFile, "The file", "The top level of `NAME.scenarios.yaml`.")
    parts += table(Scenario, "A scenario", "Each item of `scenarios:`.")
    parts += table(
        Step,
        "A step",
        "Each item of `steps:` sets exactly one field. The bare steps ("
        + ", ".join(f"`{step}`" for step in BARE_STEPS)
        + ") are written alone, as `- silence`.",
    )
    parts += table(
        Expect, "What must hold at the end", "The fields of `expect:`; each is checked when given."
    )
    return "\n".join(parts) + "\n"


def _type_name(info: FieldInfo) -> str:
    text = str(info.annotation).replace("typing.", "").replace("NoneType", "None")
    text = re.sub(r"voicefsm\.[\w.]+\.", "", text)
    text = re.sub(r"<class '(\w+)'>", r"\1", text).replace("datetime.date", "date")
    return f"`{text}`".replace("|", "&#124;")


# -- flow API --------------------------------------------------------------------------------


def _exported(base: type) -> list[str]:
    """What ``voicefsm.flow`` exports that derives from ``base`` (not ``base`` itself)."""
    import voicefsm.flow as flow

    return [
        name
        for name in flow.__all__
        if isinstance(getattr(flow, name), type)
        and issubclass(getattr(flow, name), base)
        and getattr(flow, name) is not base
    ]


def state_kinds() -> str:
    from statemachine import State

    names = _exported(State)
    return "\n\n".join(f"::: voicefsm.flow.{name}" for name in names) + "\n"


def expectations() -> str:
    from voicefsm.flow.expect_base import Expectation

    names = _exported(Expectation)
    return "\n\n".join(f"::: voicefsm.flow.{name}" for name in names) + "\n"


GENERATORS = {
    "cli": cli_reference,
    "settings": settings_reference,
    "scenario-steps": scenario_reference,
    "state-kinds": state_kinds,
    "expectations": expectations,
}
