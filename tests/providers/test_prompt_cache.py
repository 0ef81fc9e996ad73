"""The prompt audio cache: hits never touch the provider, only complete syntheses are kept, disk is shared."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

from voicefsm.errors import ProviderError, ProviderUnavailable
from voicefsm.providers.prompt_cache import (
    CachedTextToSpeech,
    PromptCache,
    Synthesis,
    VoiceIdentity,
    voice_identity,
)
from voicefsm.providers.scripted import ScriptedTextToSpeech
from voicefsm.settings import Settings

VOICE = VoiceIdentity("fake", "alice", "m1")
GREETING = "Hi, this is Bright Smile Dental."


class CountingTts:
    """A synthesizer whose audio depends on the text, counting what it is asked; it can fail or hold."""

    def __init__(self) -> None:
        self.on_error = None
        self.requests: list[str] = []
        self.fail_with: str | None = None
        self.fail_after_first_chunk = False
        self.closed = False
        self.chunk_sent = asyncio.Event()

    @staticmethod
    def audio(text: str) -> bytes:
        return text.encode() * 40

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        self.requests.append(text)
        if self.fail_with is not None:
            raise ProviderError("fake-tts", self.fail_with)
        audio = self.audio(text)
        for start in range(0, len(audio), 300):
            yield audio[start : start + 300]
            self.chunk_sent.set()
            if self.fail_after_first_chunk:
                raise ProviderError("fake-tts", "the stream was cut off", retryable=True)
            await asyncio.sleep(0)

    async def aclose(self) -> None:
        self.closed = True


class Factory:
    """Builds CountingTts instances and remembers them, so a test can tell whether a provider was built."""

    def __init__(self) -> None:
        self.built: list[CountingTts] = []
        self.fail_with: str | None = None

    def __call__(self) -> CountingTts:
        tts = CountingTts()
        tts.fail_with = self.fail_with
        self.built.append(tts)
        return tts

    @property
    def requests(self) -> list[str]:
        return [text for tts in self.built for text in tts.requests]


def files(folder: Path, pattern: str = "*.ulaw") -> list[Path]:
    """The cache files under ``folder`` (blocking; tiny folders)."""
    return sorted(folder.rglob(pattern))


def cut_short(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-10])


async def spoken(tts: CachedTextToSpeech, text: str) -> bytes:
    async with contextlib.aclosing(tts.synthesize(text)) as chunks:
        return b"".join([chunk async for chunk in chunks])


async def test_a_second_synthesis_of_a_prompt_comes_from_memory_without_building_the_provider() -> None:
    cache = PromptCache(None)
    factory = Factory()
    make = cache.wrap(VOICE, factory)
    first, second = make(), make()
    assert await spoken(first, GREETING) == CountingTts.audio(GREETING)
    assert await spoken(second, GREETING) == CountingTts.audio(GREETING)
    assert factory.requests == [GREETING]
    assert len(factory.built) == 1  # the second call's synthesizer never built a provider
    assert (cache.stats.misses, cache.stats.hits_memory) == (1, 1)
    assert second.last is not None and second.last.source == "memory" and second.last.completed
    assert first.last is not None and first.last.source == "provider" and first.last.completed
    await first.aclose()
    await second.aclose()
    assert factory.built[0].closed
    await cache.aclose()


async def test_an_interrupted_synthesis_is_not_stored() -> None:
    cache = PromptCache(None)
    factory = Factory()
    tts = cache.wrap(VOICE, factory)()
    reports: list[Synthesis] = []
    tts.on_synthesis = reports.append
    async with contextlib.aclosing(tts.synthesize(GREETING)) as chunks:
        await anext(chunks)  # the caller barges in after the first chunk
    assert reports == [Synthesis(GREETING, "provider", reports[0].first_byte_s, False)]
    assert cache.peek(VOICE, GREETING) is None
    assert await spoken(tts, GREETING) == CountingTts.audio(GREETING)
    assert factory.requests == [GREETING, GREETING]
    assert cache.peek(VOICE, GREETING) == CountingTts.audio(GREETING)
    await tts.aclose()
    await cache.aclose()


async def test_a_cancelled_consumer_stores_nothing() -> None:
    cache = PromptCache(None)
    factory = Factory()
    tts = cache.wrap(VOICE, factory)()
    consumed = asyncio.Event()

    async def speak() -> None:
        async with contextlib.aclosing(tts.synthesize(GREETING)) as chunks:
            async for _ in chunks:
                consumed.set()
                await asyncio.Event().wait()  # the audio plays until the call hangs up

    task = asyncio.create_task(speak())
    await asyncio.wait_for(consumed.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cache.peek(VOICE, GREETING) is None
    await tts.aclose()
    await cache.aclose()


async def test_a_failed_synthesis_is_not_stored_and_is_reported() -> None:
    cache = PromptCache(None)
    factory = Factory()
    tts = cache.wrap(VOICE, factory)()
    assert isinstance(tts.provider, CountingTts)  # build it, then make it fail halfway through
    factory.built[0].fail_after_first_chunk = True
    with pytest.raises(ProviderError, match="cut off"):
        await spoken(tts, GREETING)
    assert cache.peek(VOICE, GREETING) is None
    assert tts.last is not None and not tts.last.completed
    await tts.aclose()
    await cache.aclose()


async def test_fixed_prompts_reach_the_disk_and_another_worker_plays_them_from_there(tmp_path: Path) -> None:
    worker_a, worker_b = PromptCache(tmp_path), PromptCache(tmp_path)
    worker_a.register_fixed([GREETING])
    worker_b.register_fixed([GREETING])
    factory_a, factory_b = Factory(), Factory()
    tts_a = worker_a.wrap(VOICE, factory_a)()
    await spoken(tts_a, GREETING)
    await worker_a.flush()
    assert len(files(tmp_path)) == 1 and not files(tmp_path, "*.tmp")
    tts_b = worker_b.wrap(VOICE, factory_b)()
    assert await spoken(tts_b, GREETING) == CountingTts.audio(GREETING)
    assert tts_b.last is not None and tts_b.last.source == "disk"
    assert factory_b.built == []
    assert await spoken(tts_b, GREETING) == CountingTts.audio(GREETING)
    assert tts_b.last is not None and tts_b.last.source == "memory"
    for tts, cache in ((tts_a, worker_a), (tts_b, worker_b)):
        await tts.aclose()
        await cache.aclose()


async def test_a_damaged_file_is_a_miss_and_is_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = PromptCache(tmp_path)
    cache.register_fixed([GREETING])
    factory = Factory()
    await spoken(cache.wrap(VOICE, factory)(), GREETING)
    await cache.flush()
    (path,) = files(tmp_path)
    cut_short(path)
    fresh = PromptCache(tmp_path)
    fresh.register_fixed([GREETING])
    fresh_factory = Factory()
    with caplog.at_level(logging.WARNING):
        assert await spoken(fresh.wrap(VOICE, fresh_factory)(), GREETING) == CountingTts.audio(GREETING)
    assert "is damaged" in caplog.text
    assert fresh_factory.requests == [GREETING]
    await fresh.flush()
    assert PromptCache(tmp_path)._read(path) == CountingTts.audio(GREETING)
    assert fresh.stats.disk_errors == 1
    await cache.aclose()
    await fresh.aclose()


async def test_filled_templates_stay_in_memory_in_their_own_bounded_map(tmp_path: Path) -> None:
    greeting_bytes = len(CountingTts.audio(GREETING))
    cache = PromptCache(tmp_path, memory_bytes=greeting_bytes * 8, filled_entries=2)
    cache.register_fixed([GREETING])
    factory = Factory()
    tts = cache.wrap(VOICE, factory)()
    await spoken(tts, GREETING)
    names = [f"You're booked, {name}." for name in ("Ann", "Bob", "Cy")]
    for text in names:
        await spoken(tts, text)
    await cache.flush()
    assert len(files(tmp_path)) == 1  # only the fixed prompt is written to disk
    assert cache.peek(VOICE, GREETING) is not None  # filled texts never evict a fixed prompt
    assert cache.peek(VOICE, names[0]) is None  # the least recently used filled text went
    assert cache.peek(VOICE, names[2]) is not None
    no_filled = PromptCache(None, filled_entries=0)
    await spoken(no_filled.wrap(VOICE, Factory())(), names[0])
    assert no_filled.peek(VOICE, names[0]) is None
    await tts.aclose()
    await cache.aclose()


async def test_memory_is_bounded_by_bytes_least_recently_used_first() -> None:
    texts = ["one one one", "two two two", "six six six"]
    size = len(CountingTts.audio(texts[0]))
    cache = PromptCache(None, memory_bytes=size * 2)
    cache.register_fixed(texts)
    tts = cache.wrap(VOICE, Factory())()
    await spoken(tts, texts[0])
    await spoken(tts, texts[1])
    await spoken(tts, texts[0])  # a hit: now the most recently used
    await spoken(tts, texts[2])
    assert cache.peek(VOICE, texts[1]) is None
    assert cache.peek(VOICE, texts[0]) is not None
    assert cache.memory_bytes == size * 2
    await tts.aclose()
    await cache.aclose()


async def test_each_voice_has_its_own_audio() -> None:
    cache = PromptCache(None)
    factory = Factory()
    await spoken(cache.wrap(VOICE, factory)(), GREETING)
    await spoken(cache.wrap(VoiceIdentity("fake", "bob", "m1"), factory)(), GREETING)
    await spoken(cache.wrap(VoiceIdentity("fake", "alice", "m2"), factory)(), GREETING)
    assert factory.requests == [GREETING] * 3
    await cache.aclose()


async def test_warming_caches_every_prompt_and_a_failure_is_retried_at_call_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = PromptCache(tmp_path)
    factory = Factory()
    make = factory
    broken = "The one the service refuses."
    refusals = [broken]  # the service refuses it once, during the warm-up
    original = CountingTts.synthesize

    async def refusing(self: CountingTts, text: str) -> AsyncGenerator[bytes, None]:
        if text in refusals:
            refusals.remove(text)
            self.requests.append(text)
            raise ProviderError("fake-tts", "HTTP 429: busy", retryable=True)
        async for chunk in original(self, text):
            yield chunk

    progress: list[str] = []
    with pytest.MonkeyPatch.context() as patch, caplog.at_level(logging.WARNING):
        patch.setattr(CountingTts, "synthesize", refusing)
        results = await cache.warm(
            VOICE, make, [GREETING, broken, GREETING], progress=lambda r: progress.append(r.text)
        )
        assert [r.source for r in results] == ["provider", None]
        assert results[1].error is not None and "busy" in results[1].error
        assert results[0].duration_s == pytest.approx(len(CountingTts.audio(GREETING)) / 8000)
        assert sorted(progress) == sorted([GREETING, broken])
        assert "could not synthesize the prompt" in caplog.text
        again = await cache.warm(VOICE, make, [GREETING])
        assert [r.source for r in again] == ["memory"]
        tts = cache.wrap(VOICE, make)()
        assert await spoken(tts, broken) == CountingTts.audio(broken)  # retried when a call needs it
        await tts.aclose()
    assert factory.requests.count(GREETING) == 1
    assert cache.stats.warm_failures == 1
    assert all(tts.closed for tts in factory.built)
    await cache.aclose()
    restarted = PromptCache(tmp_path)
    assert [r.source for r in await restarted.warm(VOICE, make, [GREETING, broken])] == ["disk", "disk"]
    await restarted.aclose()


def test_built_in_voices_are_identified_from_settings() -> None:
    settings = Settings(_env_file=None, ELEVENLABS_VOICE_ID="v1", ELEVENLABS_MODEL="m9")  # type: ignore[call-arg]
    eleven = voice_identity("elevenlabs", object, settings)
    assert eleven == VoiceIdentity("elevenlabs", "v1", "m9")
    proxied = settings.model_copy(update={"elevenlabs_base_url": "http://127.0.0.1:9"})
    elsewhere = voice_identity("elevenlabs", object, proxied)
    assert elsewhere is not None and elsewhere.key("Hi.") != eleven.key("Hi.")  # a fake's audio stays its own
    assert voice_identity("scripted", ScriptedTextToSpeech, settings) is None
    plugin = voice_identity("acme", object, settings)
    assert plugin is not None and not plugin.persistent

    class Described:
        @classmethod
        def voice_identity(cls, settings: Settings) -> VoiceIdentity:
            return VoiceIdentity("acme", "v", "m")

    assert voice_identity("acme", Described, settings) == VoiceIdentity("acme", "v", "m")


async def test_an_unknown_plugin_voice_is_never_written_to_disk(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path)
    cache.register_fixed([GREETING])
    await spoken(cache.wrap(VoiceIdentity("acme", persistent=False), Factory())(), GREETING)
    await cache.flush()
    assert not files(tmp_path)
    await cache.aclose()


def test_settings_choose_the_cache(tmp_path: Path) -> None:
    off = Settings(_env_file=None, VOICEFSM_PROMPT_CACHE="false")  # type: ignore[call-arg]
    assert PromptCache.from_settings(off) is None
    memory = PromptCache.from_settings(Settings(_env_file=None, VOICEFSM_PROMPT_CACHE_DIR=""))  # type: ignore[call-arg]
    assert memory is not None and memory.directory is None
    disk = PromptCache.from_settings(Settings(_env_file=None, VOICEFSM_PROMPT_CACHE_DIR=str(tmp_path)))  # type: ignore[call-arg]
    assert disk is not None and disk.directory == tmp_path


async def test_a_failure_retrying_cannot_mend_ends_the_warm_up_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = PromptCache(None)
    built: list[int] = []

    def no_key() -> CountingTts:
        built.append(1)
        raise ProviderUnavailable("fake-tts", "no API key: set FAKE_API_KEY")

    texts = [f"Prompt number {n}." for n in range(6)]
    with caplog.at_level(logging.WARNING):
        results = await cache.warm(VOICE, no_key, texts, concurrency=2)
    assert [r.source for r in results] == [None] * 6
    assert all(r.error and "FAKE_API_KEY" in r.error for r in results)
    assert len(built) <= 2  # the prompts already running when it failed; no more after
    assert caplog.text.count("stopped synthesizing prompts ahead of time") == 1
    assert "could not synthesize" not in caplog.text
    await cache.aclose()
