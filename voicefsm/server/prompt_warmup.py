"""A served flow's prompt cache: each call's synthesizer goes through it; fixed prompts are made first.

``voicefsm serve`` opens one :class:`PromptCaching` for its flow and provider. It wraps the
per-call synthesizer factory (so calls go through the cache), and :meth:`PromptCaching.warm`
synthesizes every fixed prompt of the flow (:mod:`voicefsm.flow.prompts`) before the server
reports ready, printing a progress line. A prompt that fails to warm is logged and synthesized
when a call needs it; warming never stops the server from starting, and never holds it for long:
each prompt's audio must start (and go on) within ``VOICEFSM_TTS_DEADLINE_S``, and the whole warm-up
ends at ``VOICEFSM_PROMPT_WARM_DEADLINE_S``; the prompts left are logged and made at call time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from voicefsm.errors import ProviderError
from voicefsm.flow.prompts import fixed_prompts, fixed_texts
from voicefsm.providers.base import TextCallback, TextToSpeech
from voicefsm.providers.prompt_cache import PromptCache, VoiceIdentity, WarmedPrompt, voice_identity
from voicefsm.providers.registry import choose_provider, create_tts, get_tts_class
from voicefsm.settings import Settings

WarmProgress = Callable[[int, int, WarmedPrompt], None]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PromptCaching:
    """The cache (None: switched off, or a provider that is never cached) and the voice it is keyed by."""

    flow: type[Any]
    settings: Settings
    cache: PromptCache | None
    identity: VoiceIdentity | None

    def wrap(self, make: Callable[[], TextToSpeech]) -> Callable[[], TextToSpeech]:
        """``make``, or a factory of synthesizers that go through the cache."""
        if self.cache is None or self.identity is None:
            return make
        return self.cache.wrap(self.identity, make)

    async def warm(
        self, make: Callable[[], TextToSpeech], *, progress: WarmProgress | None = None
    ) -> list[WarmedPrompt]:
        """Synthesize every fixed prompt not cached yet (unless VOICEFSM_PROMPT_WARM is off)."""
        if self.cache is None or self.identity is None:
            return []
        texts = fixed_texts(self.flow)
        self.cache.register_fixed(texts)  # so they reach the disk even when warming is off
        if not self.settings.prompt_warm:
            return []
        deadline_s = self.settings.prompt_warm_deadline_s
        unique = list(dict.fromkeys(texts))
        done: dict[str, WarmedPrompt] = {}
        counting = _counting(len(unique), progress)

        def step(result: WarmedPrompt) -> None:
            done[result.text] = result
            counting(result)

        chunk_deadline_s = self.settings.tts_deadline_s
        try:
            async with asyncio.timeout(deadline_s):
                return await self.cache.warm(
                    self.identity,
                    lambda: _WithDeadline(make(), chunk_deadline_s),
                    unique,
                    concurrency=self.settings.prompt_warm_concurrency,
                    progress=step,
                )
        except TimeoutError:
            reason = (
                f"not warmed within the start-up deadline (VOICEFSM_PROMPT_WARM_DEADLINE_S={deadline_s:g})"
            )
            skipped = [text for text in unique if text not in done]
            log.warning(
                "prompt warm-up stopped at its deadline of %g s: %d of %d prompts not warmed (%s); "
                "each is synthesized when a call first needs it. Check the TTS provider, or raise "
                "VOICEFSM_PROMPT_WARM_DEADLINE_S",
                deadline_s,
                len(skipped),
                len(unique),
                "; ".join(repr(text[:30]) for text in skipped[:5]) + ("; ..." if len(skipped) > 5 else ""),
            )
            for text in skipped:
                step(WarmedPrompt(text, None, None, 0.0, error=reason))
            return [done[text] for text in unique]


@contextlib.asynccontextmanager
async def prompt_caching(settings: Settings, flow: type[Any], tts_name: str) -> AsyncIterator[PromptCaching]:
    """The prompt cache for serving ``flow`` with the TTS provider ``tts_name``; closed on exit."""
    identity = voice_identity(tts_name, get_tts_class(tts_name), settings)
    cache = PromptCache.from_settings(settings) if identity is not None else None
    try:
        yield PromptCaching(flow, settings, cache, identity)
    finally:
        if cache is not None:
            await cache.aclose()


def progress_printer(stream: TextIO | None = None) -> WarmProgress:
    """A progress line on stderr (rewritten in place on a terminal; else one summary line)."""
    out = stream or sys.stderr
    live = out.isatty()
    started = time.perf_counter()
    counts = {"memory": 0, "disk": 0, "provider": 0, None: 0}

    def show(done: int, total: int, result: WarmedPrompt) -> None:
        counts[result.source] += 1
        line = (
            f"  prompts        {done}/{total} warmed: {counts['provider']} synthesized, "
            f"{counts['memory'] + counts['disk']} from the cache"
        )
        if counts[None]:
            line += f", {counts[None]} failed (retried at call time; see the log)"
        if done == total:
            prefix = "\r" if live else ""
            out.write(f"{prefix}{line} in {time.perf_counter() - started:.1f} s\n")
        elif live:
            out.write(f"\r{line}")
        out.flush()

    return show


async def warm_flow_prompts(
    settings: Settings, flow: type[Any], tts_name: str, *, progress: WarmProgress | None = None
) -> tuple[PromptCaching, list[WarmedPrompt]]:
    """``voicefsm prompts --warm``: cache every fixed prompt of ``flow`` as ``voicefsm serve`` would."""
    async with prompt_caching(settings, flow, tts_name) as prompts:
        if prompts.cache is None or prompts.identity is None:
            return prompts, []
        texts = fixed_texts(flow)
        results = await prompts.cache.warm(
            prompts.identity,
            lambda: create_tts(tts_name, settings),
            texts,
            concurrency=settings.prompt_warm_concurrency,
            progress=_counting(len(texts), progress),
        )
        return prompts, results


class _WithDeadline:
    """A warm-up synthesizer whose audio must start, and go on, within ``deadline_s`` (a blackholed
    provider fails the prompt instead of holding the start-up); the failure is retryable."""

    def __init__(self, inner: TextToSpeech, deadline_s: float) -> None:
        self.inner = inner
        self.deadline_s = deadline_s
        self.on_error: TextCallback | None = None
        self.name = getattr(inner, "name", type(inner).__name__)

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        async with contextlib.aclosing(self.inner.synthesize(text)) as chunks:
            iterator = aiter(chunks)
            while True:
                try:
                    async with asyncio.timeout(self.deadline_s):
                        chunk = await anext(iterator)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise ProviderError(
                        "tts",
                        f"no audio within {self.deadline_s:g} s (VOICEFSM_TTS_DEADLINE_S)",
                        retryable=True,
                    ) from None
                yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


def _counting(total: int, progress: WarmProgress | None) -> Callable[[WarmedPrompt], None]:
    done = 0

    def step(result: WarmedPrompt) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, result)

    return step


def print_prompts(
    console: Console, settings: Settings, flow: type[Any], *, warm: bool, tts: str | None
) -> bool:
    """``voicefsm prompts``: list the fixed prompts, warming them first with ``warm``; False if any failed."""
    listed = fixed_prompts(flow)
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("state", "label", *(("seconds", "from") if warm else ()), "text"):
        table.add_column(column, justify="right" if column == "seconds" else "left", overflow="fold")
    if not warm:
        for prompt in listed:
            table.add_row(prompt.state, prompt.label, escape(prompt.text))
        console.print(table)
        console.print(f"{len(listed)} fixed prompts ({len({p.text for p in listed})} distinct texts)")
        return True
    try:
        tts_name = choose_provider("tts", settings, tts)
        prompts, results = asyncio.run(
            warm_flow_prompts(settings, flow, tts_name, progress=progress_printer())
        )
    except ProviderError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return False
    if prompts.cache is None:
        why = (
            "VOICEFSM_PROMPT_CACHE is off" if prompts.identity is not None else f"{tts_name} is never cached"
        )
        console.print(f"[bold red]error:[/] nothing to warm: {why}", soft_wrap=True)
        return False
    failed = [result for result in results if result.source is None]
    if results and len(failed) == len(results) and len({result.error for result in failed}) == 1:
        console.print(f"[bold red]error:[/] no prompt could be synthesized: {escape(failed[0].error or '')}")
        return False
    by_text = {result.text: result for result in results}
    for prompt in listed:
        result = by_text[prompt.text]
        seconds = f"{result.duration_s:.2f}" if result.duration_s is not None else "[red]failed[/]"
        source = {"provider": "synthesized", None: escape(result.error or "")}.get(
            result.source, result.source
        )
        table.add_row(prompt.state, prompt.label, seconds, str(source), escape(prompt.text))
    console.print(table)
    where = prompts.cache.directory or "memory only (VOICEFSM_PROMPT_CACHE_DIR is empty)"
    console.print(f"TTS {tts_name} ({prompts.identity.voice if prompts.identity else ''}); cache {where}")
    if failed:
        console.print(
            f"[bold red]{len(failed)} of {len(results)} prompts could not be synthesized[/]; "
            "a served flow synthesizes them when a call needs them"
        )
    return not failed
