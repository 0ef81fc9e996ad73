"""Find speech providers by name: built-in ones and third-party plugins.

A plugin registers a class under the ``voicefsm.providers`` entry-point group, named
``stt.NAME`` or ``tts.NAME``::

    [project.entry-points."voicefsm.providers"]
    "stt.deepgram" = "voicefsm_deepgram:DeepgramSpeechToText"

The class must offer ``from_settings(settings)`` (or take no arguments) and implement the
matching protocol of :mod:`voicefsm.providers.base`.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Literal

from voicefsm.errors import ProviderUnavailable
from voicefsm.providers.base import SpeechToText, TextToSpeech
from voicefsm.settings import Settings

Kind = Literal["stt", "tts"]
ENTRY_POINT_GROUP = "voicefsm.providers"

_BUILT_IN: dict[tuple[Kind, str], tuple[str, str]] = {
    ("stt", "scripted"): ("voicefsm.providers.scripted", "ScriptedSpeechToText"),
    ("tts", "scripted"): ("voicefsm.providers.scripted", "ScriptedTextToSpeech"),
    ("stt", "elevenlabs"): ("voicefsm.providers.elevenlabs_stt", "ElevenLabsSpeechToText"),
    ("tts", "elevenlabs"): ("voicefsm.providers.elevenlabs_tts", "ElevenLabsTextToSpeech"),
    ("stt", "azure"): ("voicefsm.providers.azure_stt", "AzureSpeechToText"),
    ("tts", "azure"): ("voicefsm.providers.azure_tts", "AzureTextToSpeech"),
    ("stt", "local"): ("voicefsm.providers.local_stt", "PocketsphinxSpeechToText"),
    ("tts", "local"): ("voicefsm.providers.local_tts", "EspeakTextToSpeech"),
}

#: Built-in providers whose packages come with an extra; the others' come with voicefsm itself.
_EXTRAS = {"elevenlabs": "elevenlabs", "azure": "azure"}


def available(kind: Kind) -> list[str]:
    """Names that :func:`create_stt` / :func:`create_tts` accept for ``kind``, plugins included."""
    names = {name for known_kind, name in _BUILT_IN if known_kind == kind}
    names.update(
        ep.name.split(".", 1)[1]
        for ep in entry_points(group=ENTRY_POINT_GROUP)
        if ep.name.startswith(f"{kind}.")
    )
    return sorted(names)


@functools.cache  # scanning installed packages' entry points costs ~19 ms, and calls start often
def get_provider_class(kind: Kind, name: str) -> type[Any]:
    """The class registered as ``name`` for ``kind``, without building it."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == f"{kind}.{name}":
            loaded: type[Any] = ep.load()
            return loaded
    target = _BUILT_IN.get((kind, name))
    if target is None:
        raise ProviderUnavailable(
            f"{kind}.{name}",
            f"no {kind.upper()} provider is called {name!r}; choose one of {', '.join(available(kind))}",
        )
    module_name, class_name = target
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.startswith("voicefsm."):
            raise ProviderUnavailable(
                f"{kind}.{name}", f"this voicefsm build has no {name} {kind.upper()}"
            ) from exc
        raise ProviderUnavailable(f"{kind}.{name}", _install_hint(name, exc.name)) from exc
    provider_class: type[Any] = getattr(module, class_name)
    return provider_class


def _install_hint(name: str, missing: str | None) -> str:
    extra = _EXTRAS.get(name)
    if extra is not None:
        return f"needs the {missing} package: pip install 'voicefsm[{extra}]'"
    return (
        f"needs the {missing} package, which a plain install of voicefsm includes; "
        "reinstall it: pip install --force-reinstall voicefsm"
    )


def get_stt_class(name: str) -> type[SpeechToText]:
    """The speech-to-text class called ``name``."""
    return get_provider_class("stt", name)


def get_tts_class(name: str) -> type[TextToSpeech]:
    """The text-to-speech class called ``name``."""
    return get_provider_class("tts", name)


def _build(provider_class: type[Any], settings: Settings) -> Any:
    from_settings: Callable[[Settings], Any] | None = getattr(provider_class, "from_settings", None)
    return from_settings(settings) if from_settings is not None else provider_class()


def create_stt(name: str, settings: Settings) -> SpeechToText:
    """A new recognizer (one per call) of the provider called ``name``."""
    stt: SpeechToText = _build(get_stt_class(name), settings)
    return stt


def create_tts(name: str, settings: Settings) -> TextToSpeech:
    """A new synthesizer of the provider called ``name``."""
    tts: TextToSpeech = _build(get_tts_class(name), settings)
    return tts


def choose_provider(kind: Kind, settings: Settings, explicit: str | None = None) -> str:
    """Which provider to use: the one asked for, else the one whose credentials are set, else ``local``."""
    if explicit:
        return explicit
    configured = settings.stt_provider if kind == "stt" else settings.tts_provider
    if configured:
        return configured
    if settings.elevenlabs_api_key is not None:
        return "elevenlabs"
    if settings.azure_speech_key is not None:
        return "azure"
    return "local"
