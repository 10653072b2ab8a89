"""Times and durations as `tfbig monitor` reads them from the command line.

A window is a duration (`90s`, `15m`, `1h`, `1.5d`, or plain seconds) so that
cron can say "the last hour against the hour before" without arithmetic. A
time is an ISO 8601 date-time (a zone-less one is UTC, as the log file names
are), seconds since the epoch, `now`, or `-DURATION` (that long before now).
"""

from __future__ import annotations

import datetime
import re
import time

from tfbig.errors import UsageError

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)\s*$")


class TimeSpecError(UsageError):
    """A --since/--until/--window value that is not a time or a duration."""


def parse_duration(text: str) -> float:
    """Seconds in `text` (`90s`, `15m`, `1h`, `1.5d`, `2w`; no unit: seconds); must be > 0."""
    match = _DURATION.match(str(text))
    if match is None or float(match[1]) <= 0:
        raise TimeSpecError(f"{text!r} is not a duration: give a positive number with a unit "
                            f"s, m, h, d or w, e.g. 30m or 1h")
    return float(match[1]) * UNITS[match[2] or "s"]


def parse_time(text: str, *, now: float | None = None) -> float:
    """Seconds since the epoch for an ISO 8601 time, epoch seconds, `now` or `-DURATION`."""
    now = time.time() if now is None else now
    text = str(text).strip()
    if text == "now":
        return now
    if text.startswith("-"):
        return now - parse_duration(text[1:])
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TimeSpecError(f"{text!r} is not a time: give ISO 8601 (2024-05-01T12:00:00Z), "
                            f"epoch seconds, now, or -DURATION such as -2h") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def iso(seconds: float | None) -> str | None:
    """UTC ISO 8601 to the millisecond, for reports."""
    if seconds is None:
        return None
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
