"""A per-connection rate limiter shared by every worker through the cache (Redis in
production): a fixed window of `calls` per `per` seconds."""

import time

from django.core.cache import cache


def reserve(connection_id: int, calls: int, per: float, now: float | None = None) -> float:
    """Take one call from this connection's budget. Returns 0 when the call may go now, or
    the seconds to wait for the next window (the call was not taken)."""
    now = time.time() if now is None else now
    window = int(now // per)
    key = f"crm-rate:{connection_id}:{window}"
    cache.add(key, 0, timeout=int(per * 2) + 1)
    try:
        used = cache.incr(key)
    except ValueError:  # evicted between add and incr: start the window again
        cache.set(key, 1, timeout=int(per * 2) + 1)
        used = 1
    if used <= calls:
        return 0.0
    return (window + 1) * per - now
