"""All configuration in one place: environment variables and ``.env``, read once by the CLI (or a test).

Names follow the predecessor (``TWILIO_ACCOUNT_SID``, ``VOICE_STREAM_URL``, ``ELEVENLABS_API_KEY``,
``AZURE_SPEECH_KEY`` ...); voicefsm's own knobs start with ``VOICEFSM_``. Nothing below this
module reads the environment: the object is passed down.
"""

from __future__ import annotations

import os
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

STREAM_PATH = "/twilio/stream"


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


def _user_cache_dir() -> str:
    """Where prompt audio is cached by default: the user's cache folder (XDG, or LOCALAPPDATA on Windows)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.environ.get("LOCALAPPDATA")
    base = base or os.path.expanduser("~/.cache")
    return os.path.join(base, "voicefsm", "prompts")


class Settings(BaseSettings):
    """voicefsm's settings. Every field can be set by the environment variable named in its alias."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    # Server
    host: str = Field("127.0.0.1", validation_alias=_env("VOICEFSM_HOST"))
    port: int = Field(8080, ge=0, le=65535, validation_alias=_env("VOICE_SERVER_PORT", "VOICEFSM_PORT"))
    public_url: str | None = Field(None, validation_alias=_env("VOICEFSM_PUBLIC_URL", "PUBLIC_URL"))
    voice_stream_url: str | None = Field(None, validation_alias=_env("VOICE_STREAM_URL"))
    insecure: bool = Field(False, validation_alias=_env("VOICEFSM_INSECURE"))
    max_concurrent_calls: int = Field(200, ge=1, validation_alias=_env("VOICEFSM_MAX_CONCURRENT_CALLS"))
    drain_timeout_s: float = Field(20.0, ge=0, validation_alias=_env("VOICEFSM_DRAIN_TIMEOUT_S"))
    stream_idle_timeout_s: float = Field(20.0, gt=0, validation_alias=_env("VOICEFSM_STREAM_IDLE_TIMEOUT_S"))
    db_url: str = Field(
        "sqlite+aiosqlite:///voicefsm.db", validation_alias=_env("VOICEFSM_DB_URL", "DATABASE_URL")
    )
    recordings_dir: str | None = Field("recordings", validation_alias=_env("VOICEFSM_RECORDINGS_DIR"))
    voice_monitor: bool = Field(False, validation_alias=_env("VOICE_MONITOR"))

    # Providers: an explicit name wins, then whichever credentials are present, then local.
    stt_provider: str | None = Field(None, validation_alias=_env("VOICEFSM_STT", "STT_PROVIDER"))
    tts_provider: str | None = Field(None, validation_alias=_env("VOICEFSM_TTS", "TTS_PROVIDER"))
    language: str = Field("en", validation_alias=_env("VOICEFSM_LANGUAGE"))

    # Twilio
    twilio_account_sid: str | None = Field(None, validation_alias=_env("TWILIO_ACCOUNT_SID"))
    twilio_auth_token: SecretStr | None = Field(None, validation_alias=_env("TWILIO_AUTH_TOKEN"))
    twilio_auth_token_secondary: SecretStr | None = Field(
        None, validation_alias=_env("TWILIO_AUTH_TOKEN_SECONDARY")
    )
    twilio_phone_number: str | None = Field(None, validation_alias=_env("TWILIO_PHONE_NUMBER"))
    twilio_region: str | None = Field(None, validation_alias=_env("TWILIO_REGION"))
    twilio_edge: str | None = Field(None, validation_alias=_env("TWILIO_EDGE"))
    twilio_api_base: str | None = Field(None, validation_alias=_env("TWILIO_API_BASE"))
    twilio_timeout_s: float = Field(10.0, gt=0, validation_alias=_env("TWILIO_TIMEOUT_S"))

    # ElevenLabs
    elevenlabs_api_key: SecretStr | None = Field(None, validation_alias=_env("ELEVENLABS_API_KEY"))
    elevenlabs_voice_id: str = Field("21m00Tcm4TlvDq8ikWAM", validation_alias=_env("ELEVENLABS_VOICE_ID"))
    elevenlabs_model: str = Field("eleven_flash_v2_5", validation_alias=_env("ELEVENLABS_MODEL"))
    elevenlabs_base_url: str | None = Field(None, validation_alias=_env("ELEVENLABS_BASE_URL"))
    elevenlabs_timeout_s: float = Field(10.0, gt=0, validation_alias=_env("ELEVENLABS_TIMEOUT_S"))
    stt_model_id: str = Field("scribe_v2_realtime", validation_alias=_env("STT_MODEL_ID"))
    stt_language_code: str | None = Field(None, validation_alias=_env("STT_LANGUAGE_CODE"))
    stt_vad_silence_threshold_s: float = Field(
        0.8, ge=0.3, le=3.0, validation_alias=_env("STT_VAD_SILENCE_S")
    )
    stt_vad_threshold: float = Field(0.4, ge=0.1, le=0.9, validation_alias=_env("STT_VAD_THRESHOLD"))

    # Azure
    azure_speech_key: SecretStr | None = Field(None, validation_alias=_env("AZURE_SPEECH_KEY"))
    azure_speech_region: str = Field("westeurope", validation_alias=_env("AZURE_SPEECH_REGION"))
    azure_speech_host: str | None = Field(None, validation_alias=_env("AZURE_SPEECH_HOST"))
    azure_speech_endpoint: str | None = Field(None, validation_alias=_env("AZURE_SPEECH_ENDPOINT"))
    azure_tts_voice: str = Field("en-US-JennyNeural", validation_alias=_env("AZURE_TTS_VOICE"))
    azure_stt_language: str = Field("en-US", validation_alias=_env("AZURE_STT_LANGUAGE"))
    azure_silence_timeout_ms: int = Field(
        800, ge=100, le=5000, validation_alias=_env("AZURE_SILENCE_TIMEOUT_MS")
    )

    # Access control and provider resilience (team guard; docs/security.md)
    api_tokens: SecretStr | None = Field(None, validation_alias=_env("VOICEFSM_API_TOKENS"))
    api_tokens_file: str | None = Field(None, validation_alias=_env("VOICEFSM_API_TOKENS_FILE"))
    secret_key: SecretStr | None = Field(None, validation_alias=_env("VOICEFSM_SECRET_KEY"))
    session_max_age_s: float = Field(43200.0, gt=0, validation_alias=_env("VOICEFSM_SESSION_MAX_AGE_S"))
    cookie_secure: bool = Field(True, validation_alias=_env("VOICEFSM_COOKIE_SECURE"))
    tts_fallback: str | None = Field(None, validation_alias=_env("VOICEFSM_TTS_FALLBACK"))
    tts_deadline_s: float = Field(8.0, gt=0, validation_alias=_env("VOICEFSM_TTS_DEADLINE_S"))

    # Flow resources: serve with each call getting the flow's declared fakes (demos, load tests).
    fake_resources: bool = Field(
        False,
        validation_alias=_env("VOICEFSM_FAKE_RESOURCES"),
        description="serve and chat give each call the flow's declared fake resources, not the real ones",
    )

    @field_validator("public_url", "voice_stream_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @property
    def dev_mode(self) -> bool:
        """No Twilio auth token: requests cannot be verified, so the server stays on loopback."""
        return self.twilio_auth_token is None

    @property
    def auth_tokens(self) -> tuple[str, ...]:
        """The Twilio auth tokens signatures are checked against (primary, then the one being rotated in)."""
        tokens = (self.twilio_auth_token, self.twilio_auth_token_secondary)
        return tuple(token.get_secret_value() for token in tokens if token is not None)

    def public_base_url(self) -> str | None:
        """The https:// base Twilio calls, from VOICEFSM_PUBLIC_URL or derived from VOICE_STREAM_URL."""
        if self.public_url:
            return self.public_url
        if self.voice_stream_url:
            parts = urlsplit(self.voice_stream_url)
            scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
            path = parts.path.removesuffix(STREAM_PATH)
            return urlunsplit((scheme, parts.netloc, path, "", ""))
        return None

    def stream_url(self) -> str | None:
        """The wss:// URL of the media stream, as written into the TwiML (and signed by Twilio)."""
        if self.voice_stream_url:
            return self.voice_stream_url
        base = self.public_base_url()
        if base is None:
            return None
        parts = urlsplit(base)
        scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
        return urlunsplit((scheme, parts.netloc, parts.path + STREAM_PATH, "", ""))

    # Prompt audio cache (issue 17): fixed prompts are synthesized once, kept in memory and on disk.
    prompt_cache: bool = Field(True, validation_alias=_env("VOICEFSM_PROMPT_CACHE"))
    prompt_cache_dir: str | None = Field(
        default_factory=_user_cache_dir, validation_alias=_env("VOICEFSM_PROMPT_CACHE_DIR")
    )  # empty: memory only
    prompt_cache_memory_mb: float = Field(
        64.0, ge=0, validation_alias=_env("VOICEFSM_PROMPT_CACHE_MEMORY_MB")
    )
    prompt_cache_filled: int = Field(256, ge=0, validation_alias=_env("VOICEFSM_PROMPT_CACHE_FILLED"))
    prompt_warm: bool = Field(True, validation_alias=_env("VOICEFSM_PROMPT_WARM"))
    prompt_warm_concurrency: int = Field(
        2, ge=1, le=32, validation_alias=_env("VOICEFSM_PROMPT_WARM_CONCURRENCY")
    )

    # ahead (issue 17): synthesis ahead of need.
    speak_ahead: bool = Field(
        True,
        validation_alias=_env("VOICEFSM_SPEAK_AHEAD"),
        description=(
            "start synthesizing a call's next prompt as soon as its text is certain (while the current "
            "prompt plays or the transition runs), at most one at a time per call"
        ),
    )

    # ops: records that the database could not take, logs and traces (docs/deploy.md "Observability").
    records_spool_dir: str | None = Field(
        None,
        validation_alias=_env("VOICEFSM_RECORDS_SPOOL_DIR"),
        description=(
            "where call records wait (JSON lines) while the database is down, replayed in order when it "
            "answers; default: beside the SQLite file, else beside the recordings; empty: no spool"
        ),
    )
    records_spool_max_mb: float = Field(
        256.0,
        gt=0,
        validation_alias=_env("VOICEFSM_RECORDS_SPOOL_MAX_MB"),
        description="the records spool's size bound; records past it are lost and counted in /metrics",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        validation_alias=_env("VOICEFSM_LOG_FORMAT"),
        description="`serve`'s log lines: `text`, or `json` (one object a line, with the call SID)",
    )
    otel_endpoint: str | None = Field(
        None,
        validation_alias=_env("VOICEFSM_OTEL_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description=(
            "export OpenTelemetry traces over OTLP/HTTP to this collector URL "
            "(`pip install 'voicefsm[otel]'`); unset: no traces"
        ),
    )
    otel_service_name: str = Field(
        "voicefsm",
        validation_alias=_env("VOICEFSM_OTEL_SERVICE_NAME", "OTEL_SERVICE_NAME"),
        description="the service.name of the exported traces",
    )
    prompt_warm_deadline_s: float = Field(
        60.0,
        gt=0,
        validation_alias=_env("VOICEFSM_PROMPT_WARM_DEADLINE_S"),
        description=(
            "the longest the start-up prompt warm-up may take; prompts not warmed by then are "
            "synthesized at call time"
        ),
    )

    def records_spool_path(self) -> str | None:
        """The records spool folder: the setting, else beside the SQLite file or the recordings."""
        if self.records_spool_dir is not None:
            return self.records_spool_dir or None
        url = self.db_url
        if url.startswith("sqlite") and ":memory:" not in url and ":///" in url:
            database = url.split(":///", 1)[1].split("?", 1)[0]
            if database and not database.startswith("file:"):
                return database + ".spool"
        if self.recordings_dir:
            return os.path.join(os.path.dirname(os.path.normpath(self.recordings_dir)), "records-spool")
        return "records-spool"

    # edge: input limits, rate limits, readiness and webhook deadlines (docs/security.md, docs/deploy.md)
    max_request_bytes: int = Field(
        2 * 1024 * 1024,
        ge=1024,
        validation_alias=_env("VOICEFSM_MAX_REQUEST_BYTES"),
        description="largest request body the JSON API and pages accept (bytes); larger gets 413",
    )
    max_webhook_bytes: int = Field(
        64 * 1024,
        ge=1024,
        validation_alias=_env("VOICEFSM_MAX_WEBHOOK_BYTES"),
        description="largest body a Twilio webhook (/twilio/...) may carry (bytes); larger gets 413",
    )
    rate_limit_per_ip: float = Field(
        20.0,
        ge=0,
        validation_alias=_env("VOICEFSM_RATE_LIMIT_PER_IP"),
        description="requests per second one client address may make to /twilio/* and /api/* "
        "(bursts of twice that); 0 turns the per-address limit off",
    )
    rate_limit_global: float = Field(
        200.0,
        ge=0,
        validation_alias=_env("VOICEFSM_RATE_LIMIT_GLOBAL"),
        description="requests per second all clients together may make to /twilio/* and /api/* "
        "(bursts of twice that); 0 turns the global limit off",
    )
    trusted_proxies: str | None = Field(
        None,
        validation_alias=_env("VOICEFSM_TRUSTED_PROXIES"),
        description="comma-separated addresses or networks (e.g. 127.0.0.1,10.0.0.0/8) of the TLS proxies "
        "whose X-Forwarded-For is believed; unset: X-Forwarded-For is ignored",
    )
    login_attempts_per_minute: int = Field(
        5,
        ge=1,
        validation_alias=_env("VOICEFSM_LOGIN_ATTEMPTS_PER_MINUTE"),
        description="failed logins one client address may make per minute before /login answers 429",
    )
    readyz_db_timeout_s: float = Field(
        1.0,
        gt=0,
        validation_alias=_env("VOICEFSM_READYZ_DB_TIMEOUT_S"),
        description="how long /readyz waits for the database to answer a ping before it answers 503",
    )
    webhook_deadline_s: float = Field(
        1.5,
        gt=0,
        validation_alias=_env("VOICEFSM_WEBHOOK_DEADLINE_S"),
        description="how long the voice webhook may wait on the database or campaigns before it answers "
        "with what it has (Twilio gives up after 15 s)",
    )

    # scale/workers: many workers on one PostgreSQL (`serve --workers N`, or one serve per host).
    worker_name: str | None = Field(
        None,
        validation_alias=_env("VOICEFSM_WORKER_NAME"),
        description="this worker's name in the call records, unique among the workers sharing a database "
        "and the same across its restarts (default host:port; `serve --workers N` adds /1 ... /N)",
    )
    call_lease_s: float = Field(
        30.0,
        ge=3.0,
        le=3600.0,
        validation_alias=_env("VOICEFSM_CALL_LEASE_S"),
        description="seconds a worker vouches for its live calls, renewed every third of it; a call whose "
        "worker has not renewed it for this long is marked abandoned by any other worker",
    )
