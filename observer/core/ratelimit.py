"""Token buckets per source (a cgroup id): how many events of one source are handled per second."""

from __future__ import annotations


class Buckets:
    """One token bucket per key, refilled at rate tokens per second up to burst.

    take(key, now) spends a token and says whether there was one. O(1) per call; state
    of keys no longer wanted is dropped with keep_only()."""

    def __init__(self, rate: float, burst: float):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be above zero and burst at least 1")
        self.rate, self.burst = float(rate), float(burst)
        self.state: dict = {}   # key -> (tokens, time of the last take)

    def take(self, key, now: float) -> bool:
        tokens, last = self.state.get(key, (self.burst, now))
        if now > last:
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            last = now
        ok = tokens >= 1.0
        self.state[key] = (tokens - 1.0 if ok else tokens, last)
        return ok

    def take_n(self, key, now: float, n: int) -> int:
        """n takes at once (a round's events of one source): how many found a token."""
        tokens, last = self.state.get(key, (self.burst, now))
        if now > last:
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            last = now
        got = min(n, int(tokens)) if tokens >= 1.0 else 0
        self.state[key] = (tokens - got, last)
        return got

    def keep_only(self, keys) -> None:
        self.state = {k: v for k, v in self.state.items() if k in keys}

    def __len__(self) -> int:
        return len(self.state)
