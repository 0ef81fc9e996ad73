"""Synthesis ahead of need: one speculative synthesis per call, played when its text is asked for."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import pytest

from voicefsm.errors import ProviderError
from voicefsm.providers.prompt_cache import Prefetcher, PromptCache, VoiceIdentity

WITHIN_S = 2.0
NEXT = "What time on Tuesday?"
OTHER = "Sorry, that's not a day. Which day?"


class GatedTts:
    """Audio depends on the text; a synthesis sends a chunk, then waits for ``release`` to send the rest."""

    def __init__(self) -> None:
        self.on_error = None
        self.requests: list[str] = []
        self.active = 0
        self.most_active = 0
        self.finished: list[str] = []
        self.stopped: list[str] = []
        self.release = asyncio.Event()
        self.first_chunk_sent = asyncio.Event()
        self.fail_first: set[str] = set()
        #: When set, a cancelled synthesis takes until this event to stop (as Azure's stop_speaking does).
        self.slow_stop: asyncio.Event | None = None

    @staticmethod
    def audio(text: str) -> bytes:
        return text.encode() * 10

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        self.requests.append(text)
        if text in self.fail_first:
            self.fail_first.discard(text)
            raise ProviderError("gated", "HTTP 503: busy", retryable=True)
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        audio = self.audio(text)
        try:
            yield audio[:10]
            self.first_chunk_sent.set()
            await self.release.wait()
            yield audio[10:]
            self.finished.append(text)
        except GeneratorExit:
            self.stopped.append(text)
            raise
        except asyncio.CancelledError:
            self.stopped.append(text)
            if self.slow_stop is not None:
                await self.slow_stop.wait()
            raise
        finally:
            self.active -= 1

    async def aclose(self) -> None:
        return None


async def loop_turns(count: int = 10) -> None:
    """Let every ready task run a few steps (no time passes)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def spoken(tts: Prefetcher, text: str) -> bytes:
    async with contextlib.aclosing(tts.synthesize(text)) as chunks:
        return b"".join([chunk async for chunk in chunks])


async def test_a_prefetched_prompt_is_played_from_what_was_made_ahead() -> None:
    tts = GatedTts()
    ahead = Prefetcher(tts)
    assert ahead.prefetch(NEXT)
    await asyncio.wait_for(tts.first_chunk_sent.wait(), WITHIN_S)  # made while the current prompt plays
    tts.release.set()
    assert await spoken(ahead, NEXT) == GatedTts.audio(NEXT)
    assert tts.requests == [NEXT]
    assert (ahead.stats.started, ahead.stats.used, ahead.stats.wasted) == (1, 1, 0)
    await ahead.aclose()


async def test_taking_a_prefetch_still_in_progress_streams_the_rest_as_it_comes() -> None:
    tts = GatedTts()
    ahead = Prefetcher(tts)
    ahead.prefetch(NEXT)
    await asyncio.wait_for(tts.first_chunk_sent.wait(), WITHIN_S)
    async with contextlib.aclosing(ahead.synthesize(NEXT)) as chunks:
        assert await anext(chunks) == GatedTts.audio(NEXT)[:10]
        tts.release.set()
        assert b"".join([chunk async for chunk in chunks]) == GatedTts.audio(NEXT)[10:]
    assert tts.requests == [NEXT]
    await ahead.aclose()


async def test_another_text_is_synthesized_afresh_and_the_speculation_waits_for_its_own() -> None:
    tts = GatedTts()
    ahead = Prefetcher(tts)
    ahead.prefetch(NEXT)
    tts.release.set()
    assert await spoken(ahead, OTHER) == GatedTts.audio(OTHER)  # e.g. the prompt that plays now
    assert ahead.pending == NEXT
    assert await spoken(ahead, NEXT) == GatedTts.audio(NEXT)
    assert tts.requests == [NEXT, OTHER] or tts.requests == [OTHER, NEXT]
    assert tts.requests.count(NEXT) == 1
    assert (ahead.stats.used, ahead.stats.wasted) == (1, 0)
    await ahead.aclose()


async def test_a_wrong_guess_is_replaced_by_the_next_one_and_counted_as_wasted() -> None:
    tts = GatedTts()
    tts.release.set()
    ahead = Prefetcher(tts)
    ahead.prefetch(OTHER)
    ahead.prefetch(NEXT)
    assert await spoken(ahead, NEXT) == GatedTts.audio(NEXT)
    await ahead.aclose()
    assert (ahead.stats.started, ahead.stats.used, ahead.stats.wasted) == (2, 1, 1)


async def test_a_new_prefetch_replaces_the_old_one_and_they_never_run_together() -> None:
    tts = GatedTts()
    tts.slow_stop = asyncio.Event()
    ahead = Prefetcher(tts)
    ahead.prefetch(OTHER)
    await asyncio.wait_for(tts.first_chunk_sent.wait(), WITHIN_S)
    assert ahead.prefetch(NEXT)
    assert ahead.prefetch(NEXT)  # the same text again: nothing new starts
    assert ahead.pending == NEXT
    tts.release.set()
    # The old synthesis finishes stopping only after the new prefetch task has had its chance to run.
    asyncio.get_running_loop().call_soon(tts.slow_stop.set)
    assert await spoken(ahead, NEXT) == GatedTts.audio(NEXT)
    await ahead.aclose()
    assert tts.requests == [OTHER, NEXT]
    assert tts.stopped == [OTHER]
    assert tts.most_active == 1


async def test_barge_in_while_a_prefetched_prompt_plays_stops_its_synthesis_and_caches_nothing() -> None:
    cache = PromptCache(None)
    provider = GatedTts()
    voice = VoiceIdentity("gated")
    ahead = Prefetcher(cache.wrap(voice, lambda: provider)())
    ahead.prefetch(NEXT)
    await asyncio.wait_for(provider.first_chunk_sent.wait(), WITHIN_S)
    async with contextlib.aclosing(ahead.synthesize(NEXT)) as chunks:
        await anext(chunks)  # the caller talks over the first words
    await ahead.cancel()
    assert provider.stopped == [NEXT] and provider.finished == []
    assert cache.peek(voice, NEXT) is None
    await ahead.aclose()
    await cache.aclose()


async def test_hang_up_cancels_and_awaits_the_speculation() -> None:
    tts = GatedTts()
    ahead = Prefetcher(tts)
    ahead.prefetch(NEXT)
    await asyncio.wait_for(tts.first_chunk_sent.wait(), WITHIN_S)
    await ahead.aclose()
    assert tts.stopped == [NEXT] and tts.active == 0
    assert ahead.pending is None
    assert not ahead.prefetch(OTHER)  # closed: nothing more is started
    assert tts.requests == [NEXT]


async def test_a_prompt_already_in_memory_is_not_prefetched() -> None:
    cache = PromptCache(None)
    provider = GatedTts()
    provider.release.set()
    voice = VoiceIdentity("gated")
    call_tts = cache.wrap(voice, lambda: provider)()
    ahead = Prefetcher(call_tts)
    assert await spoken(ahead, NEXT) == GatedTts.audio(NEXT)  # now cached
    assert not ahead.prefetch(NEXT)
    assert ahead.prefetch(OTHER)
    assert await spoken(ahead, OTHER) == GatedTts.audio(OTHER)
    assert provider.requests == [NEXT, OTHER]
    await ahead.aclose()
    await call_tts.aclose()
    await cache.aclose()


async def test_a_prefetch_that_fails_is_tried_again_when_the_prompt_is_spoken() -> None:
    tts = GatedTts()
    tts.release.set()
    tts.fail_first.add(NEXT)
    ahead = Prefetcher(tts)
    ahead.prefetch(NEXT)
    assert await spoken(ahead, NEXT) == GatedTts.audio(NEXT)
    assert tts.requests == [NEXT, NEXT]
    await ahead.aclose()


async def test_a_failure_of_the_spoken_prompt_itself_still_reaches_the_caller() -> None:
    tts = GatedTts()
    tts.fail_first.add(OTHER)
    ahead = Prefetcher(tts)
    with pytest.raises(ProviderError, match="busy"):
        await spoken(ahead, OTHER)
    await ahead.aclose()


async def test_a_prefetch_waits_until_the_prompt_being_made_has_all_its_audio() -> None:
    tts = GatedTts()
    ahead = Prefetcher(tts)
    async with contextlib.aclosing(ahead.synthesize(OTHER)) as current:
        assert await anext(current) == GatedTts.audio(OTHER)[:10]
        assert ahead.prefetch(NEXT)  # the next prompt is known while this one is still being made
        await loop_turns()  # a prefetch free to start would have asked for NEXT by now
        assert tts.requests == [OTHER]
        tts.release.set()
        assert b"".join([chunk async for chunk in current]) == GatedTts.audio(OTHER)[10:]
    assert await spoken(ahead, NEXT) == GatedTts.audio(NEXT)
    assert tts.requests == [OTHER, NEXT]
    assert tts.most_active == 1  # the call never asked its provider for two prompts at once
    await ahead.aclose()


async def test_the_next_speculation_waits_until_the_one_taken_has_all_its_audio() -> None:
    tts = GatedTts()
    ahead = Prefetcher(tts)
    ahead.prefetch(NEXT)
    await asyncio.wait_for(tts.first_chunk_sent.wait(), WITHIN_S)
    async with contextlib.aclosing(ahead.synthesize(NEXT)) as chunks:
        assert await anext(chunks) == GatedTts.audio(NEXT)[:10]  # playing from the speculation, unfinished
        assert ahead.prefetch(OTHER)
        await loop_turns()
        assert tts.requests == [NEXT]  # not asked while the taken one is still synthesizing
        tts.release.set()
        assert b"".join([chunk async for chunk in chunks]) == GatedTts.audio(NEXT)[10:]
    assert await spoken(ahead, OTHER) == GatedTts.audio(OTHER)
    assert tts.requests == [NEXT, OTHER] and tts.most_active == 1
    await ahead.aclose()


async def test_cancel_keeping_a_finished_speculation_stops_only_a_running_one() -> None:
    tts = GatedTts()
    tts.release.set()
    ahead = Prefetcher(tts)
    ahead.prefetch(NEXT)
    await loop_turns()
    assert tts.finished == [NEXT] and not ahead.running
    await ahead.cancel(keep_finished=True)
    assert ahead.pending == NEXT  # all its audio is here: kept, played only if this very text is spoken
    tts.release.clear()
    tts.first_chunk_sent.clear()
    ahead.prefetch(OTHER)
    await asyncio.wait_for(tts.first_chunk_sent.wait(), WITHIN_S)
    assert ahead.running
    await ahead.cancel(keep_finished=True)
    assert ahead.pending is None and tts.stopped == [OTHER]
    await ahead.aclose()
    assert (ahead.stats.started, ahead.stats.used, ahead.stats.wasted) == (2, 0, 2)
