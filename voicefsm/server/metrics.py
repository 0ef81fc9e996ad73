"""Prometheus metrics of one server: live calls, outcomes, turn latency, provider errors.

Each app gets its own registry, so two servers in one process (tests, the bridge) never mix counts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from voicefsm.providers.prompt_cache import PromptCache

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

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

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
