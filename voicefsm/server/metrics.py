"""Prometheus metrics of one server: live calls, outcomes, turn latency, provider errors.

Each app gets its own registry, so two servers in one process (tests, the bridge) never mix counts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from voicefsm.providers.prompt_cache import PromptCache
from voicefsm.records import RecordWriter

#: Turn latency is what a caller feels: from the end of their words to the first audio of the reply.
TURN_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    """Counters and histograms exposed at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.active_calls = Gauge("voicefsm_active_calls", "Calls in progress", registry=self.registry)
        self.calls = Counter("voicefsm_calls", "Calls ended, by outcome", ["outcome"], registry=self.registry)
        self.turn_latency = Histogram(
            "voicefsm_turn_latency_seconds",
            "From the caller's committed utterance to the first reply audio",
            buckets=TURN_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.provider_errors = Counter(
            "voicefsm_provider_errors", "Speech provider failures", ["kind"], registry=self.registry
        )
        self.rejected = Counter(
            "voicefsm_rejected_requests",
            "Requests refused (signature, token, capacity)",
            registry=self.registry,
        )
        self.loop_stalls = Counter(
            "voicefsm_loop_stalls",
            "Event-loop stalls over the watchdog threshold (every call waited; see the log for the callback)",
            registry=self.registry,
        )
        self.loop_stall_seconds = Counter(
            "voicefsm_loop_stall_seconds", "Total time the event loop was blocked", registry=self.registry
        )
        self.calls_started = 0
        # ops: TTS retries and fallbacks (providers/fallback.py), prompt warm-up failures.
        self.tts_retries = Counter(
            "voicefsm_tts_retries",
            "TTS prompts asked again of the same provider",
            ["provider"],
            registry=self.registry,
        )
        self.tts_fallbacks = Counter(
            "voicefsm_tts_fallbacks",
            "TTS prompts handed to the fallback provider",
            ["provider"],
            registry=self.registry,
        )
        self.prompt_warm_failures = Counter(
            "voicefsm_prompt_warm_failures",
            "Fixed prompts not warmed at start-up (failed or past the deadline); made at call time",
            registry=self.registry,
        )
        # faults: frames a media stream dropped, and its anomalies (see TwilioMediaStream.dropped).
        self.stream_frames_dropped = Counter(
            "voicefsm_stream_frames_dropped",
            "Media-stream frames dropped or anomalies seen, by kind (malformed, dtmf_flood, sequence_gap)",
            ["kind"],
            registry=self.registry,
        )

    def call_started(self) -> None:
        self.calls_started += 1
        self.active_calls.inc()

    def call_ended(self, outcome: str) -> None:
        self.active_calls.dec()
        self.calls.labels(outcome=outcome).inc()

    def request_rejected(self) -> None:
        self.rejected.inc()

    def provider_error(self, kind: str) -> None:
        self.provider_errors.labels(kind=kind).inc()

    def watch_prompt_cache(self, cache: PromptCache | None) -> None:
        """Expose the prompt cache's hits, misses and bytes (read when /metrics is scraped)."""
        if cache is not None:
            self.registry.register(_PromptCacheCollector(cache))

    def loop_stalled(self, seconds: float) -> None:
        """The loop-lag watchdog saw the event loop blocked for ``seconds``."""
        self.loop_stalls.inc()
        self.loop_stall_seconds.inc(seconds)

    # -- ops: records, TTS resilience, prompt warm-up -------------------------------------------------------

    def watch_records(self, writer: RecordWriter | None) -> None:
        """Expose the record writer's counts (written, retried, spooled, replayed, lost, queue and spool
        depth), read when /metrics is scraped."""
        if writer is not None:
            self.registry.register(_RecordsCollector(writer))

    def tts_event(self, kind: str, provider: str) -> None:
        """The TTS wrapper asked ``provider`` again (``kind`` "retry") or fell back to it ("fallback")."""
        if kind == "retry":
            self.tts_retries.labels(provider=provider).inc()
        else:
            self.tts_fallbacks.labels(provider=provider).inc()

    def prompt_warm_failed(self, count: int = 1) -> None:
        """Prompts the start-up warm-up could not make (failed, or left at its deadline)."""
        self.prompt_warm_failures.inc(count)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    # ahead (issue 17): every caller turn's wait for its answer, by stage.
    def turn_stages(self, stages: Mapping[str, float | None]) -> None:
        """Observe one caller turn's stage durations in seconds (``commit``, ``parse``, ``transition``,
        ``first_audio``, ``total``; None: the stage did not happen) in ``voicefsm_turn_stage_seconds``."""
        histogram: Histogram | None = getattr(self, "_turn_stages", None)
        if histogram is None:
            histogram = Histogram(
                "voicefsm_turn_stage_seconds",
                "A caller turn's wait for its answer by stage: end of speech or last key -> commit -> "
                "parse -> transition -> first_audio frame sent (total: end of speech to first audio)",
                ["stage"],
                buckets=TURN_LATENCY_BUCKETS_S,
                registry=self.registry,
            )
            self._turn_stages = histogram
        for stage, seconds in stages.items():
            if seconds is not None:
                histogram.labels(stage=stage).observe(seconds)

    # faults: one hunk
    def stream_dropped(self, dropped: Mapping[str, int]) -> None:
        """Add one media stream's dropped frames and anomalies, by kind (at the end of the stream)."""
        for kind, count in dropped.items():
            if count:
                self.stream_frames_dropped.labels(kind=kind).inc(count)


class _PromptCacheCollector(Collector):
    """The prompt audio cache's counters, read from the cache at scrape time (nothing on the call path)."""

    def __init__(self, cache: PromptCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        stats, cache = self.cache.stats, self.cache
        hits = CounterMetricFamily(
            "voicefsm_prompt_cache_hits", "Prompts played from the cache, by where found", labels=["source"]
        )
        hits.add_metric(["memory"], stats.hits_memory)
        hits.add_metric(["disk"], stats.hits_disk)
        yield hits
        counters = (
            ("misses", "Prompts synthesized by the provider on a call", stats.misses),
            ("served_bytes", "Audio bytes played from the cache", stats.bytes_served),
            ("warm_failures", "Fixed prompts that could not be synthesized ahead", stats.warm_failures),
            ("disk_errors", "Cache files that could not be read or written", stats.disk_errors),
        )
        for name, what, value in counters:
            yield CounterMetricFamily(f"voicefsm_prompt_cache_{name}", what, value)
        yield GaugeMetricFamily("voicefsm_prompt_cache_memory_bytes", "Audio in memory", cache.memory_bytes)
        yield GaugeMetricFamily("voicefsm_prompt_cache_entries", "Prompts in memory", cache.memory_entries)
        first_byte = HistogramMetricFamily(
            "voicefsm_tts_first_byte_seconds",
            "From asking for a prompt's audio to its first byte, by source (memory, disk, provider)",
            labels=["source"],
        )
        for source, histogram in sorted(stats.first_byte.items()):
            first_byte.add_metric([source], histogram.cumulative(), histogram.total_s)
        yield first_byte


class _RecordsCollector(Collector):
    """The record writer's counts, read at scrape time (nothing on the call path)."""

    def __init__(self, writer: RecordWriter) -> None:
        self.writer = writer

    def collect(self) -> Iterator[Metric]:
        writer = self.writer
        counters = (
            ("written", "Call records written to the database (replayed ones included)", writer.written),
            ("retried", "Call records written again after a failed attempt", writer.retried),
            ("spooled", "Call records kept in the on-disk spool while the database was down", writer.spooled),
            ("replayed", "Call records written from the spool once the database answered", writer.replayed),
            (
                "lost",
                "Call records lost: not kept even in the spool, or refused by the database",
                writer.lost,
            ),
        )
        for name, what, value in counters:
            yield CounterMetricFamily(f"voicefsm_records_{name}", what, value)
        yield GaugeMetricFamily(
            "voicefsm_records_queue_depth", "Call records in memory waiting for the writer", writer.pending
        )
        yield GaugeMetricFamily(
            "voicefsm_records_spool_depth",
            "Call records in the spool waiting for the database",
            writer.spool_depth,
        )
