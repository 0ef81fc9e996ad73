"""Fixtures for provider tests: loopback fakes of the speech services, one per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fakes.elevenlabs_fake import FakeElevenLabs, serve_fake


@pytest.fixture
async def elevenlabs_fake() -> AsyncIterator[FakeElevenLabs]:
    """A fake ElevenLabs API on 127.0.0.1:<ephemeral>; point the SDK at ``elevenlabs_fake.base_url``."""
    async with serve_fake(FakeElevenLabs()) as fake:
        yield fake
