"""Token buckets: how often something may happen, by key, on an injected clock (no I/O)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

#: Keys remembered per bucket table; the least recently seen are forgotten first.
MAX_TRACKED_KEYS = 10_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """Token buckets by key: ``rate`` tokens a second, holding at most ``burst``; 0 rate = unlimited."""

    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic, capacity: int = 0
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._clock = clock
        self._capacity = capacity or MAX_TRACKED_KEYS
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _bucket(self, key: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            self._buckets[key] = bucket
            while len(self._buckets) > self._capacity:
                self._buckets.popitem(last=False)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            self._buckets.move_to_end(key)
        return bucket

    def take(self, key: str = "") -> float:
        """Take a token for ``key``: 0.0 when there was one, else the seconds until there will be."""
        if self.rate <= 0:
            return 0.0
        bucket = self._bucket(key)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def available(self, key: str = "") -> float:
        """Seconds until ``key`` has a token (0.0: it has one now); nothing is taken."""
        if self.rate <= 0:
            return 0.0
        bucket = self._bucket(key)
        return 0.0 if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) / self.rate
