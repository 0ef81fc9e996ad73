"""/metrics counts what operators alert on: records written, retried, spooled, replayed, lost; TTS
retries and fallbacks; prompts the warm-up left."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from voicefsm.records import CallStore, RecordWriter
from voicefsm.server.metrics import Metrics

CALL = "CA" + "0" * 32


class DownStore(CallStore):
    down = True

    async def write_batch(self, records: Sequence[tuple[str, str, Mapping[str, Any]]]) -> None:
        if self.down:
            raise ConnectionError("connection refused")
        await super().write_batch(records)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    assert value is not None, f"{name} {labels} is not exposed"
    return value


async def test_the_records_counters_and_depths_follow_the_writer(tmp_path: Path) -> None:
    store = await DownStore.open(f"sqlite:///{tmp_path / 'calls.db'}")
    assert isinstance(store, DownStore)
    metrics = Metrics()
    writer = RecordWriter(store, spool_dir=tmp_path / "spool", retries=1, retry_delay_s=0, probe_delay_s=0.01)
    metrics.watch_records(writer)
    writer.start()
    try:
        writer.call_started(
            CALL, flow="booking", caller=None, started_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
        )
        writer.state(CALL, "greeting")
        assert sample(metrics, "voicefsm_records_queue_depth") == 2
        async with asyncio.timeout(10):
            await writer.flush()
        assert writer.database_down
        assert sample(metrics, "voicefsm_records_spooled_total") == 2
        assert sample(metrics, "voicefsm_records_retried_total") == 2
        assert sample(metrics, "voicefsm_records_spool_depth") == 2
        assert sample(metrics, "voicefsm_records_queue_depth") == 0
        store.down = False
        async with asyncio.timeout(10):
            await writer.settle()
        assert not writer.database_down
        assert sample(metrics, "voicefsm_records_replayed_total") == 2
        assert sample(metrics, "voicefsm_records_written_total") == 2
        assert sample(metrics, "voicefsm_records_spool_depth") == 0
        assert sample(metrics, "voicefsm_records_lost_total") == 0
    finally:
        await writer.aclose()
        await store.aclose()


def test_tts_retries_fallbacks_and_warm_up_failures_are_counted() -> None:
    metrics = Metrics()
    metrics.tts_event("retry", "elevenlabs")
    metrics.tts_event("retry", "elevenlabs")
    metrics.tts_event("fallback", "local")
    metrics.prompt_warm_failed(3)
    assert sample(metrics, "voicefsm_tts_retries_total", provider="elevenlabs") == 2
    assert sample(metrics, "voicefsm_tts_fallbacks_total", provider="local") == 1
    assert sample(metrics, "voicefsm_prompt_warm_failures_total") == 3
    text = metrics.render().decode()
    assert 'voicefsm_tts_fallbacks_total{provider="local"} 1.0' in text
