"""Prompt audio cache: a flow's prompts are synthesized once, then played from memory or disk.

A statechart knows every fixed prompt it can say, so none of them needs the speech service on
a call's critical path. :class:`PromptCache` keeps audio keyed by the voice that spoke it
(:class:`VoiceIdentity`: provider, voice, model, format) and the exact text:

- **in memory**, a least-recently-used map bounded by bytes, shared by every call of the process;
- **on disk**, one file per prompt under a cache folder, shared by the workers of one host.
  Files are written to a temporary name and moved into place with :func:`os.replace`, so a
  reader sees a whole file or none; each carries a checksum, and a damaged one is a miss.
  Disk reads and writes run in a worker thread, never on the event loop.

Only *fixed* prompts (registered with :meth:`PromptCache.register_fixed`, usually by the
warm-up) are written to disk. Other texts (templates with their slots filled, which may hold
what a caller said) are kept in a smaller in-memory map of their own, bounded by entries and
bytes, so they never evict the fixed ones and never reach the disk.

:class:`CachedTextToSpeech` is the :class:`~voicefsm.providers.base.TextToSpeech` a call uses:
a hit streams the stored audio without building or touching the provider; a miss streams from
the provider while recording, and stores the audio only once the synthesis has completed (a
barge-in, a hang-up or an error stores nothing).

:class:`Prefetcher` starts the synthesis of a prompt before it is needed (see its docstring).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from voicefsm.errors import ProviderError
from voicefsm.providers.base import TextCallback, TextToSpeech
from voicefsm.settings import Settings

log = logging.getLogger(__name__)

#: The audio every built-in provider produces: 8 kHz G.711 mu-law.
ULAW_8000 = "ulaw_8000"
#: Bumped when the key or the file layout changes, so old files are simply never found.
CACHE_VERSION = "1"
_MAGIC = b"VFSMPC1\n"
_DIGEST_BYTES = 32
#: A hit is streamed in pieces of this many bytes (one second of mu-law audio).
HIT_CHUNK_BYTES = 8000
BYTES_PER_SECOND = 8000

Source = Literal["memory", "disk", "provider"]


@dataclass(frozen=True, slots=True)
class VoiceIdentity:
    """Who speaks: the provider and everything of it that changes the audio of a given text.

    ``persistent`` is false when the identity may not capture everything that shapes the audio
    (a third-party provider that does not describe itself): such audio is cached in memory only,
    where the settings cannot change under it.
    """

    provider: str
    voice: str = ""
    model: str = ""
    format: str = ULAW_8000
    persistent: bool = True
    #: Where the provider is reached, when it is not its usual service (a proxy, a fake, a region).
    endpoint: str = ""

    def key(self, text: str) -> str:
        """The cache key of ``text`` spoken by this voice: a SHA-256 hex digest."""
        parts = (CACHE_VERSION, self.provider, self.voice, self.model, self.format, self.endpoint, text)
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def voice_identity(provider_name: str, provider_class: type[Any], settings: Settings) -> VoiceIdentity | None:
    """The identity of the voice ``provider_name`` speaks with under ``settings``; None: do not cache.

    A provider class may describe itself with a ``voice_identity(settings)`` classmethod returning a
    :class:`VoiceIdentity`. The built-in providers are described here from the same settings their
    ``from_settings`` reads. The scripted provider is never cached: it is the tests' and ``chat``'s
    witness of what was asked.
    """
    describe: Callable[[Settings], VoiceIdentity | None] | None = getattr(
        provider_class, "voice_identity", None
    )
    if describe is not None:
        return describe(settings)
    if provider_name == "scripted":
        return None
    if provider_name == "elevenlabs":
        return VoiceIdentity(
            "elevenlabs",
            settings.elevenlabs_voice_id,
            settings.elevenlabs_model,
            endpoint=settings.elevenlabs_base_url or "",
        )
    if provider_name == "azure":
        where = settings.azure_speech_endpoint or settings.azure_speech_host or settings.azure_speech_region
        return VoiceIdentity(
            "azure", settings.azure_tts_voice, "", "raw-8khz-8bit-mono-mulaw", endpoint=where
        )
    if provider_name == "local":
        return VoiceIdentity("local", settings.language.lower(), "espeak-ng")
    return VoiceIdentity(provider_name, persistent=False)


#: Upper bounds (seconds) of the time-to-first-byte histogram of prompts, by where their audio came from.
FIRST_BYTE_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(slots=True)
class FirstByteHistogram:
    """Counts of first-byte times per bucket (cumulative counts are made when exported)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(FIRST_BYTE_BUCKETS_S) + 1))
    total_s: float = 0.0

    def observe(self, seconds: float) -> None:
        index = next((i for i, bound in enumerate(FIRST_BYTE_BUCKETS_S) if seconds <= bound), -1)
        self.counts[index] += 1
        self.total_s += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """``(upper bound, count)`` pairs as Prometheus wants them, ending with ``+Inf``."""
        pairs, running = [], 0
        for bound, count in zip((*map(str, FIRST_BYTE_BUCKETS_S), "+Inf"), self.counts, strict=True):
            running += count
            pairs.append((bound, running))
        return pairs


@dataclass(slots=True)
class CacheStats:
    """What the cache has done since it was made (read by ``/metrics``).

    ``first_byte`` holds, per source (memory, disk, provider), how long calls waited for the first
    audio of their prompts.
    """

    hits_memory: int = 0
    hits_disk: int = 0
    misses: int = 0
    stored: int = 0
    bytes_served: int = 0
    disk_writes: int = 0
    disk_errors: int = 0
    warmed: int = 0
    warm_failures: int = 0
    first_byte: dict[str, FirstByteHistogram] = field(default_factory=dict)

    def observe(self, synthesis: Synthesis) -> None:
        """Count how long a call waited for the first audio of a prompt."""
        if synthesis.first_byte_s is not None:
            self.first_byte.setdefault(synthesis.source, FirstByteHistogram()).observe(synthesis.first_byte_s)


class _Lru:
    """Audio by key, least recently used first out, bounded by total bytes and by entries."""

    def __init__(self, max_bytes: int, max_entries: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.bytes = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> bytes | None:
        audio = self._items.get(key)
        if audio is not None:
            self._items.move_to_end(key)
        return audio

    def fits(self, size: int) -> bool:
        return 0 < size <= self.max_bytes and self.max_entries != 0

    def put(self, key: str, audio: bytes) -> None:
        if not self.fits(len(audio)):
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= len(old)
        self._items[key] = audio
        self.bytes += len(audio)
        while self.bytes > self.max_bytes or (
            self.max_entries is not None and len(self._items) > self.max_entries
        ):
            _, evicted = self._items.popitem(last=False)
            self.bytes -= len(evicted)


class PromptCache:
    """Prompt audio shared by every call of a process (memory) and the workers of a host (disk).

    ``directory`` None keeps audio in memory only. ``memory_bytes`` bounds the fixed prompts held
    in memory; ``filled_entries`` and ``filled_bytes`` bound the other texts (0 entries: do not
    cache them). Close with :meth:`aclose`, which waits for the disk writes still running.
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        memory_bytes: int = 64 << 20,
        filled_entries: int = 256,
        filled_bytes: int | None = None,
    ) -> None:
        self.directory = directory
        self.stats = CacheStats()
        self._fixed_texts: set[str] = set()
        self._fixed = _Lru(memory_bytes)
        self._filled = _Lru(filled_bytes if filled_bytes is not None else memory_bytes // 4, filled_entries)
        self._writes: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> PromptCache | None:
        """The cache ``VOICEFSM_PROMPT_CACHE*`` describe, or None when it is switched off."""
        if not settings.prompt_cache:
            return None
        folder = settings.prompt_cache_dir
        return cls(
            Path(folder).expanduser() if folder else None,
            memory_bytes=int(settings.prompt_cache_memory_mb * (1 << 20)),
            filled_entries=settings.prompt_cache_filled,
        )

    # -- what is fixed ------------------------------------------------------------------------

    def register_fixed(self, texts: Iterable[str]) -> None:
        """Mark ``texts`` as fixed prompts: kept in the main memory map and written to disk."""
        self._fixed_texts.update(texts)

    def is_fixed(self, text: str) -> bool:
        """Whether ``text`` was registered as a fixed prompt."""
        return text in self._fixed_texts

    @property
    def memory_bytes(self) -> int:
        """Audio bytes held in memory now."""
        return self._fixed.bytes + self._filled.bytes

    @property
    def memory_entries(self) -> int:
        """Prompts held in memory now."""
        return len(self._fixed) + len(self._filled)

    # -- lookups and stores -------------------------------------------------------------------

    def _memory(self, text: str) -> _Lru:
        return self._fixed if text in self._fixed_texts else self._filled

    def peek(self, identity: VoiceIdentity, text: str) -> bytes | None:
        """The audio of ``text`` if it is in memory (no disk, no counting)."""
        return self._memory(text).get(identity.key(text))

    async def lookup(
        self, identity: VoiceIdentity, text: str, *, count: bool = True
    ) -> tuple[bytes, Source] | None:
        """The stored audio of ``text`` and where it was found, or None (a miss).

        ``count`` False leaves the hit and miss counters alone (the warm-up is not a call).
        """
        key = identity.key(text)
        audio = self._memory(text).get(key)
        if audio is not None:
            self.stats.hits_memory += count
            return audio, "memory"
        path = self._path(identity, key)
        if path is not None and text in self._fixed_texts:
            audio = await asyncio.to_thread(self._read, path)
            if audio is not None:
                self._fixed.put(key, audio)
                self.stats.hits_disk += count
                return audio, "disk"
        self.stats.misses += count
        return None

    def accepts(self, text: str, size: int = 1) -> bool:
        """Whether audio of ``size`` bytes for ``text`` would be kept."""
        return not self._closed and self._memory(text).fits(size)

    def store(self, identity: VoiceIdentity, text: str, audio: bytes) -> None:
        """Keep a complete synthesis: in memory now, and on disk (in the background) if ``text`` is fixed."""
        if not audio or self._closed:
            return
        key = identity.key(text)
        self._memory(text).put(key, audio)
        self.stats.stored += 1
        path = self._path(identity, key)
        if path is not None and text in self._fixed_texts:
            task = asyncio.get_running_loop().create_task(self._write(path, audio), name="prompt-cache-write")
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def flush(self) -> None:
        """Wait until every disk write started so far has finished."""
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def aclose(self) -> None:
        """Stop storing and wait for the disk writes in flight; idempotent."""
        self._closed = True
        await self.flush()

    def wrap(
        self, identity: VoiceIdentity, make: Callable[[], TextToSpeech]
    ) -> Callable[[], CachedTextToSpeech]:
        """A synthesizer factory like ``make`` whose synthesizers go through this cache."""

        def factory() -> CachedTextToSpeech:
            return CachedTextToSpeech(self, identity, make)

        return factory

    # -- the disk -----------------------------------------------------------------------------

    def _path(self, identity: VoiceIdentity, key: str) -> Path | None:
        if self.directory is None or not identity.persistent:
            return None
        provider = re.sub(r"[^A-Za-z0-9_.-]", "_", identity.provider) or "_"
        return self.directory / provider / key[:2] / f"{key}.ulaw"

    def _read(self, path: Path) -> bytes | None:
        """Blocking: the audio in ``path``, or None if absent or damaged (a damaged file is removed)."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.stats.disk_errors += 1
            log.warning("prompt cache: cannot read %s: %s; synthesizing instead", path, exc)
            return None
        head = len(_MAGIC) + _DIGEST_BYTES
        audio = data[head:]
        if (
            data[: len(_MAGIC)] != _MAGIC
            or not audio
            or hashlib.sha256(audio).digest() != data[len(_MAGIC) : head]
        ):
            self.stats.disk_errors += 1
            log.warning("prompt cache: %s is damaged; removing it and synthesizing again", path)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return audio

    async def _write(self, path: Path, audio: bytes) -> None:
        try:
            await asyncio.to_thread(_write_atomically, path, _MAGIC + hashlib.sha256(audio).digest() + audio)
        except OSError as exc:
            self.stats.disk_errors += 1
            log.warning(
                "prompt cache: cannot write %s: %s; the prompt stays cached in memory only "
                "(check VOICEFSM_PROMPT_CACHE_DIR is writable)",
                path,
                exc,
            )
        else:
            self.stats.disk_writes += 1

    # -- warming ------------------------------------------------------------------------------

    async def warm(
        self,
        identity: VoiceIdentity,
        make: Callable[[], TextToSpeech],
        texts: Sequence[str],
        *,
        concurrency: int = 2,
        progress: Callable[[WarmedPrompt], None] | None = None,
    ) -> list[WarmedPrompt]:
        """Make sure every text of ``texts`` is cached (registering them as fixed); returns one result each.

        Texts already in memory or on disk are not synthesized again. A text whose synthesis
        fails is logged and reported (``error``); it is synthesized again when a call needs it.
        A failure that retrying cannot mend (a rejected key, a missing SDK) ends the warm-up: the
        texts left are reported with the same error, and logged once.
        At most ``concurrency`` syntheses run at once, each on its own synthesizer.
        """
        unique = list(dict.fromkeys(texts))
        self.register_fixed(unique)
        gate = asyncio.Semaphore(max(1, concurrency))
        results: dict[str, WarmedPrompt] = {}
        gave_up: list[str] = []

        async def one(text: str) -> None:
            async with gate:
                result = await self._warm_one(identity, make, text, gave_up)
            results[text] = result
            if progress is not None:
                progress(result)

        async with asyncio.TaskGroup() as group:
            for text in unique:
                group.create_task(one(text), name="prompt-warm")
        await self.flush()
        return [results[text] for text in unique]

    async def _warm_one(
        self, identity: VoiceIdentity, make: Callable[[], TextToSpeech], text: str, gave_up: list[str]
    ) -> WarmedPrompt:
        started = time.perf_counter()
        found = await self.lookup(identity, text, count=False)
        if found is not None:
            audio, source = found
            return WarmedPrompt(text, source, len(audio) / BYTES_PER_SECOND, time.perf_counter() - started)
        if gave_up:
            self.stats.warm_failures += 1
            return WarmedPrompt(text, None, None, 0.0, error=gave_up[0])
        tts = CachedTextToSpeech(self, identity, make)
        tts.observed = False
        try:
            size = 0
            async with contextlib.aclosing(tts.synthesize_uncached(text)) as chunks:
                async for chunk in chunks:
                    size += len(chunk)
        except Exception as exc:  # one prompt's failure never stops the others, nor the server
            self.stats.warm_failures += 1
            reason = str(exc) if isinstance(exc, ProviderError) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, ProviderError) and not exc.retryable:
                if not gave_up:
                    gave_up.append(reason)
                    log.warning(
                        "stopped synthesizing prompts ahead of time: %s; calls will synthesize them", reason
                    )
            else:
                log.warning(
                    "could not synthesize the prompt %r ahead of time: %s; a call that needs it will retry",
                    text[:60],
                    reason,
                )
            return WarmedPrompt(text, None, None, time.perf_counter() - started, error=reason)
        finally:
            await tts.aclose()
        self.stats.warmed += 1
        return WarmedPrompt(text, "provider", size / BYTES_PER_SECOND, time.perf_counter() - started)


def _write_atomically(path: Path, data: bytes) -> None:
    """Blocking: write ``data`` to ``path`` so that readers see all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@dataclass(frozen=True, slots=True)
class WarmedPrompt:
    """How warming one prompt went: where its audio came from (None: it failed), and how long it is."""

    text: str
    source: Source | None
    duration_s: float | None
    took_s: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Synthesis:
    """One prompt as a call got it: from the cache (``source`` memory/disk) or the provider, and how fast.

    ``first_byte_s`` is from the request to the first audio chunk; ``completed`` is false when the
    iteration was stopped early (barge-in, hang-up) or failed.
    """

    text: str
    source: Source
    first_byte_s: float | None
    completed: bool

    @property
    def cached(self) -> bool:
        """The audio came from the cache, not the provider."""
        return self.source != "provider"


class CachedTextToSpeech:
    """A call's synthesizer: cache first, then the provider (built on the first miss) while recording.

    ``last`` describes the most recent prompt, and ``on_synthesis`` (if set) is called with it when
    that prompt's audio has been streamed or given up on.
    """

    name = "cached"

    def __init__(self, cache: PromptCache, identity: VoiceIdentity, make: Callable[[], TextToSpeech]) -> None:
        self.cache = cache
        self.identity = identity
        self.on_error: TextCallback | None = None
        self.on_synthesis: Callable[[Synthesis], None] | None = None
        self.last: Synthesis | None = None
        #: Where the audio of the prompt being streamed now comes from (known before its first chunk).
        self.current_source: Source | None = None
        #: Whether this synthesizer's prompts count in the first-byte histogram (a call's do; warming's not).
        self.observed = True
        self._make = make
        self._provider: TextToSpeech | None = None
        self._closed = False

    @property
    def provider(self) -> TextToSpeech:
        """The wrapped provider, built on first use."""
        if self._provider is None:
            if self._closed:
                raise ProviderError(self.identity.provider, "the synthesizer was closed; build a new one")
            self._provider = self._make()
            self._provider.on_error = self.on_error
        return self._provider

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """Yield the audio of ``text``: stored audio on a hit, the provider's (recorded) on a miss."""
        started = time.perf_counter()
        found = await self.cache.lookup(self.identity, text)
        self.current_source = "provider" if found is None else found[1]
        if found is None:
            async with contextlib.aclosing(self.synthesize_uncached(text)) as chunks:
                async for chunk in chunks:
                    yield chunk
            return
        audio, source = found
        first_byte = time.perf_counter() - started
        done = False
        try:
            for start in range(0, len(audio), HIT_CHUNK_BYTES):
                chunk = audio[start : start + HIT_CHUNK_BYTES]
                self.cache.stats.bytes_served += len(chunk)
                yield chunk
            done = True
        finally:
            self._report(Synthesis(text, source, first_byte, done))

    async def synthesize_uncached(self, text: str) -> AsyncGenerator[bytes, None]:
        """Yield the provider's audio of ``text``, storing it in the cache if the synthesis completes."""
        started = time.perf_counter()
        self.current_source = "provider"
        first_byte: float | None = None
        recorded: list[bytes] | None = [] if self.cache.accepts(text) else None
        size = 0
        done = False
        try:
            async with contextlib.aclosing(self.provider.synthesize(text)) as chunks:
                async for chunk in chunks:
                    if first_byte is None:
                        first_byte = time.perf_counter() - started
                    size += len(chunk)
                    if recorded is not None:
                        recorded.append(chunk)
                        if not self.cache.accepts(text, size):
                            recorded = None  # longer than the cache keeps: stream it, do not store it
                    yield chunk
            done = True
        finally:
            self._report(Synthesis(text, "provider", first_byte, done))
        if recorded is not None and size:
            self.cache.store(self.identity, text, b"".join(recorded))

    def _report(self, synthesis: Synthesis) -> None:
        self.last = synthesis
        if self.observed:
            self.cache.stats.observe(synthesis)
        if self.on_synthesis is not None:
            try:
                self.on_synthesis(synthesis)
            except Exception:
                log.exception("on_synthesis raised")

    async def aclose(self) -> None:
        """Close the provider if one was built; idempotent. The cache itself stays open."""
        self._closed = True
        provider, self._provider = self._provider, None
        if provider is not None:
            await provider.aclose()


@contextlib.asynccontextmanager
async def open_prompt_cache(settings: Settings) -> AsyncIterator[PromptCache | None]:
    """The settings' prompt cache (None when switched off), closed (disk writes awaited) on exit."""
    cache = PromptCache.from_settings(settings)
    try:
        yield cache
    finally:
        if cache is not None:
            await cache.aclose()


def find_cached(tts: TextToSpeech) -> CachedTextToSpeech | None:
    """The :class:`CachedTextToSpeech` ``tts`` is or wraps (through ``primary``/``tts``), if any."""
    seen: TextToSpeech | None = tts
    for _ in range(4):  # a prefetcher around a deadline/fallback wrapper around the cache, at most
        if seen is None or isinstance(seen, CachedTextToSpeech):
            return seen
        seen = getattr(seen, "primary", None) or getattr(seen, "tts", None)
    return None


def source_of(tts: TextToSpeech) -> Source | None:
    """Where the prompt ``tts`` streams now comes from: the cache's memory or disk, or the provider.

    None when ``tts`` has no cache inside (every prompt then comes from the provider).
    """
    cached = find_cached(tts)
    return cached.current_source if cached is not None else None


@dataclass(eq=False)
class _Ahead:
    """One synthesis started ahead of need: its text, the audio so far, and how it ended.

    ``started_at`` and ``first_at`` are on the prefetcher's clock: when the synthesis was asked
    for (after waiting for its turn) and when its first audio came; ``source`` is where it came from.
    """

    text: str
    started_at: float | None = None
    first_at: float | None = None
    source: Source | None = None
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    done: bool = False
    error: BaseException | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


@dataclass(slots=True)
class PrefetchStats:
    """What one call's prefetcher did: started, played (taken with the same text), thrown away."""

    started: int = 0
    used: int = 0
    wasted: int = 0


class Prefetcher:
    """Synthesis ahead of need for one call: at most one speculative synthesis at a time.

    The runtime calls :meth:`prefetch` as soon as the next prompt's text is certain (the prompt of
    the state a transition is about to enter, with its slots filled) and speaks through this object,
    which is itself a :class:`~voicefsm.providers.base.TextToSpeech`: ``synthesize(text)`` plays the
    prefetched audio when the text is the same (the part already made at once, then the rest as it
    comes), and otherwise synthesizes ``text`` afresh, leaving the speculation for its own text
    (the prompt playing now is usually asked for just after the next one is known).

    - A speculative synthesis waits until the prompt being synthesized now (through this object)
      has all its audio, so a call never asks its provider for two things at once: the speculation
      runs while that audio plays.
    - A new :meth:`prefetch` replaces the one before (which is cancelled; the new synthesis starts
      once the old one has stopped, so two never run together).
    - A prompt already in the cache's memory is not prefetched: it plays at once anyway.
    - :meth:`cancel` (barge-in: what comes next may change) and :meth:`aclose` (hang-up) cancel and
      await the speculation. A cancelled synthesis stores nothing in the cache.
    - A prefetch that fails is not an error of the call: the prompt is synthesized again when spoken.

    It does not close ``tts`` (the call's synthesizer stays owned by whoever made it).

    Wiring it into a runtime (checked against FlowRuntime on the test line: the booking call
    played 4 of 4 prompts from prefetches, and barge-in and hang-up left no task behind)::

        self.ahead = Prefetcher(tts)            # once per call; speak through it:
        await call.speak(self.ahead, text, ...)
        # 1. where the next prompt becomes certain (voicefsm.flow.prompts.next_prompt):
        #    just after a Say's prompt starts:  next_prompt(state, "spoken", values)
        #    just before "filled" is sent:      next_prompt(state, "filled", values)
        self.ahead.prefetch(text)
        # 2. barge-in in a listening state, and the end of the call:
        await self.ahead.cancel()
        await self.ahead.aclose()
    """

    name = "prefetching"

    def __init__(
        self,
        tts: TextToSpeech,
        *,
        max_bytes: int = 120 * BYTES_PER_SECOND,
        now: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.tts = tts
        self.max_bytes = max_bytes
        #: The clock the speculations are timed on (the runtime's, virtual in tests).
        self.now = now
        self.stats = PrefetchStats()
        #: The speculation most recently handed over by :meth:`take` (its timing and source).
        self.taken: _Ahead | None = None
        self._ahead: _Ahead | None = None
        self._handed: asyncio.Task[None] | None = None  # a taken speculation still synthesizing
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._speaking = 0  # syntheses asked for by the runtime, in progress
        self._quiet = asyncio.Event()
        self._quiet.set()

    @property
    def on_error(self) -> TextCallback | None:
        return self.tts.on_error

    @on_error.setter
    def on_error(self, callback: TextCallback | None) -> None:
        self.tts.on_error = callback

    @property
    def pending(self) -> str | None:
        """The text being (or already) synthesized ahead, if any."""
        return self._ahead.text if self._ahead is not None else None

    @property
    def running(self) -> bool:
        """True while a speculation not yet taken is still synthesizing (or waiting for its turn)."""
        return self._ahead is not None and not self._ahead.done

    def prefetch(self, text: str) -> bool:
        """Start synthesizing ``text`` now, replacing any other speculation; False if not worth it."""
        if self._closed or not text.strip():
            return False
        if self._ahead is not None and self._ahead.text == text:
            return True
        cached = find_cached(self.tts)
        if cached is not None and cached.cache.peek(cached.identity, text) is not None:
            return False
        previous = self._drop()
        ahead = _Ahead(text)
        ahead.task = asyncio.get_running_loop().create_task(
            self._run(ahead, previous), name="prompt-prefetch"
        )
        self._own(ahead.task)
        self._ahead = ahead
        self.stats.started += 1
        return True

    def take(self, text: str) -> AsyncGenerator[bytes, None] | None:
        """The prefetched audio of ``text`` (the speculation is handed over), or None for another text."""
        ahead = self._ahead
        if ahead is None or ahead.text != text:
            return None
        self._ahead = None
        if ahead.done and ahead.error is not None:
            return None
        self.stats.used += 1
        self.taken = ahead
        if ahead.task is not None and not ahead.task.done():
            self._handed = ahead.task  # the next speculation waits until this one has all its audio
        return self._follow(ahead)

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """Yield the audio of ``text``: prefetched when it was, else from the synthesizer."""
        stream = self.take(text)
        if stream is not None:
            async with contextlib.aclosing(stream) as chunks:
                async for chunk in chunks:
                    yield chunk
            return
        self._speaking += 1  # a speculation started meanwhile waits until this one has all its audio
        self._quiet.clear()
        try:
            async with contextlib.aclosing(self.tts.synthesize(text)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            self._speaking -= 1
            if not self._speaking:
                self._quiet.set()

    async def cancel(self, *, keep_finished: bool = False) -> None:
        """Drop the speculation (barge-in: the next prompt may change) and wait until it has stopped.

        ``keep_finished`` leaves a speculation that already has all its audio: stopping it frees
        nothing, it is played only if its very text is spoken, and the next one replaces it.
        """
        if not (keep_finished and self._ahead is not None and self._ahead.done):
            self._drop()
        await self._settle()

    async def aclose(self) -> None:
        """Cancel and await everything this prefetcher started (hang-up); idempotent. ``tts`` stays open."""
        self._closed = True
        await self.cancel()

    # -- internals ------------------------------------------------------------------------------

    def _own(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _drop(self) -> asyncio.Task[None] | None:
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        self._discard(ahead)
        return ahead.task

    def _discard(self, ahead: _Ahead) -> None:
        if ahead.task is not None and not ahead.task.done():
            ahead.task.cancel()
        if ahead.error is None:
            self.stats.wasted += 1

    async def _settle(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, ahead: _Ahead, previous: asyncio.Task[None] | None) -> None:
        try:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)  # one synthesis at a time
            handed = self._handed
            if handed is not None and handed is not ahead.task and not handed.done():
                await asyncio.wait({handed})  # a taken speculation still playing in: not cancelled here
            await self._quiet.wait()  # the prompt being made now comes first
            ahead.started_at = self.now()
            async with contextlib.aclosing(self.tts.synthesize(ahead.text)) as chunks:
                async for chunk in chunks:
                    if ahead.first_at is None:
                        ahead.first_at = self.now()
                        ahead.source = source_of(self.tts)
                    ahead.chunks.append(chunk)
                    ahead.size += len(chunk)
                    ahead.changed.set()
                    if ahead.size > self.max_bytes:
                        raise ProviderError(
                            self.name, f"a prompt of over {self.max_bytes} bytes is not prefetched"
                        )
        except Exception as exc:  # the prompt is synthesized again when it is spoken
            ahead.error = exc
            log.debug("prefetching %r failed: %s", ahead.text[:40], exc)
        finally:
            ahead.done = True
            ahead.changed.set()

    async def _follow(self, ahead: _Ahead) -> AsyncGenerator[bytes, None]:
        sent = 0
        finished = False
        try:
            while True:
                while sent < len(ahead.chunks):
                    sent += 1
                    yield ahead.chunks[sent - 1]
                if ahead.done:
                    break
                ahead.changed.clear()
                await ahead.changed.wait()
            finished = True
        finally:
            if not finished and ahead.task is not None and not ahead.task.done():
                ahead.task.cancel()  # the caller stopped listening: the rest is not needed
        if ahead.error is not None:
            if isinstance(ahead.error, ProviderError) and sent == 0:
                # Failed before any audio: try once more now, as speaking without a prefetch would.
                async with contextlib.aclosing(self.tts.synthesize(ahead.text)) as chunks:
                    async for chunk in chunks:
                        yield chunk
                return
            raise ahead.error


__all__ = [
    "CacheStats",
    "CachedTextToSpeech",
    "PrefetchStats",
    "Prefetcher",
    "PromptCache",
    "Synthesis",
    "VoiceIdentity",
    "WarmedPrompt",
    "find_cached",
    "open_prompt_cache",
    "source_of",
    "voice_identity",
]
