"""The demo seed's clock: each demo story happens on the day it says, so that every timestamp
the services write on the way (timelines, audit events, ledger entries, snapshots,
notifications) agrees with the story. Only the demo seed uses it."""

from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import time_machine


def real_now() -> datetime:
    """Today, even inside a `days_ago` block."""
    if time_machine.escape_hatch.is_travelling():
        return time_machine.escape_hatch.datetime.datetime.now(tz=UTC)
    return datetime.now(tz=UTC)


@contextmanager
def days_ago(days: float, *, hour: int = 10):
    """Run the block `days` before today, at `hour` UTC (never later than now); the clock
    ticks on inside it, so consecutive steps keep their order."""
    now = real_now()
    moment = (now - timedelta(days=days)).replace(hour=hour, minute=0, second=0, microsecond=0)
    with time_machine.travel(min(moment, now), tick=True):
        yield
