"""pocketsphinx decoding in worker processes, shared by every call of the server.

pocketsphinx holds the GIL while it decodes (measured: an event loop in the same process did
not run once during a 0.7 s decode), so a decode in a thread would freeze every call's audio.
Decoding runs in a small pool of spawned processes instead; each keeps one decoder and the
grammars it has been given, keyed by their text. A worker that dies is replaced on next use.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import multiprocessing
import multiprocessing.connection
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from voicefsm.providers.local_grammar import jsgf_grammar

#: Standard deviation of the noise added to the audio, in 16-bit steps (about -72 dBFS). Digital
#: silence (from a browser or a synthesized test caller) has no spectrum to normalise against, and
#: the recognizer then hears words in it; real phone lines always carry this much noise.
DITHER = 8.0

#: How much lower than the server the workers run (os.nice increment).
NICENESS = 10

_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()
_decoder: Any = None  # in a worker: its pocketsphinx Decoder
_searches: dict[str, str] = {}  # in a worker: phrase-list digest -> the decoder search for it


def _workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _pool_now() -> ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            # spawn, not fork: the server has threads (SQLite writer, SDKs) a fork would copy mid-state.
            context = multiprocessing.get_context("spawn")
            _pool = ProcessPoolExecutor(_workers(), mp_context=context, initializer=_start_worker)
            _pool.submit(_ready)  # the first job starts the workers; later calls find them running
        return _pool


def shutdown_pool() -> None:
    """Stop the worker processes (at interpreter exit, or in tests); the next decode starts new ones."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown_pool)


def warm_up() -> None:
    """Start the workers now, so the first caller does not wait for them; returns at once."""
    _pool_now()


async def decode(pcm8k: bytes, phrases: tuple[str, ...] | None, *, repeatable: bool = False) -> str:
    """The words in ``pcm8k`` (16-bit 8 kHz mono): one of ``phrases``, or any words when None.

    ``repeatable``: one or more of the phrases in a row. A phrase list the recognizer's dictionary
    cannot say any of also means any words.
    """
    loop = asyncio.get_running_loop()
    pool = _pool_now()
    try:
        return await loop.run_in_executor(pool, _decode, pcm8k, phrases, repeatable)
    except BrokenProcessPool:
        _forget(pool)  # a worker died (killed, out of memory): start afresh next time
        raise
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # this call is being stopped
        # Not us: the pool was shut down under this decode (the interpreter is exiting).
        raise BrokenProcessPool("the decoder workers were shut down during a decode") from None


def _forget(pool: ProcessPoolExecutor) -> None:
    """Drop a broken pool, unless another call has already replaced it; never wait on the loop."""
    global _pool
    with _pool_lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)


# -- in the worker process -------------------------------------------------------------------------


def _start_worker() -> None:
    global _decoder
    from pocketsphinx import Decoder

    _exit_with_the_server()

    # Decoding is batch work; the server's event loop paces live audio. On a busy machine the loop
    # must win the CPU, or every call's outgoing frames stutter while one caller's answer decodes.
    with contextlib.suppress(OSError):
        os.nice(NICENESS)

    # bestpath off: the lattice rescoring it adds returns grammar prefixes ("half past") for whole
    # phrases; lw 10 weighs the grammar a little more than the default 6.5. Measured on synthesized
    # answers to booking.py's questions: 16 of 26 exact with the defaults, 20 of 26 with these.
    _decoder = Decoder(samprate=16000, loglevel="FATAL", bestpath=False, lw=10.0)


def _exit_with_the_server() -> None:
    """End this worker when the server process dies, however it dies.

    A pool worker holds both ends of its job queue's pipe, so a server killed with SIGKILL (or by
    the OOM killer) leaves it waiting for jobs for ever, holding the server's stdout and stderr.
    The parent's sentinel becomes readable when the parent is gone.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="voicefsm-decoder-orphan-watch", daemon=True).start()


def _ready() -> bool:
    return _decoder is not None


def _decode(pcm8k: bytes, phrases: tuple[str, ...] | None, repeatable: bool) -> str:
    import numpy as np
    import soxr

    samples = np.frombuffer(pcm8k, dtype=np.int16).astype(np.float64)
    noise = np.random.default_rng(len(samples)).normal(0.0, DITHER, len(samples))  # same audio, same noise
    samples = np.clip(samples + noise, -32768, 32767)
    pcm16k = soxr.resample(samples, 8000, 16000).clip(-32768, 32767).astype(np.int16).tobytes()
    _use(phrases, repeatable)
    _decoder.start_utt()
    _decoder.process_raw(pcm16k, full_utt=True)
    _decoder.end_utt()
    hypothesis = _decoder.hyp()
    return str(hypothesis.hypstr).strip() if hypothesis is not None else ""


def _use(phrases: tuple[str, ...] | None, repeatable: bool) -> None:
    if phrases is None:
        _decoder.activate_search("_default")
        return
    key = "\n".join((str(repeatable), *phrases))
    digest = "g" + hashlib.sha1(key.encode()).hexdigest()[:16]
    if digest not in _searches:
        grammar = jsgf_grammar(phrases, _decoder.lookup_word, repeatable=repeatable)
        if grammar is not None:
            _decoder.add_jsgf_string(digest, grammar)
        _searches[digest] = digest if grammar is not None else "_default"
    _decoder.activate_search(_searches[digest])
