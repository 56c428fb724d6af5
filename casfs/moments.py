"""Moments as people name them, for time travel (`mount --at`, `--at` of the lookups).

    2026-11-20T14:00:00Z       an ISO 8601 time; with an offset (+01:00) it is that
                               local time; without one it is UTC
    2026-11-20                 a date: its first moment, 00:00 UTC
    3d, 2h30m, 90s             that long ago (the units of `casfs.durations`)
    now                        the present
    @1763640000.25             Unix seconds, exactly (what the mount command hands
                               its daemon, so that a snapshot's moment is kept to
                               the last digit)

A moment in the future is refused: no view of it can be shown yet. Each error
names what was given and what would be understood.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from casfs.durations import parse_duration
from casfs.errors import CasfsError, ConfigError

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?[smhdw])+")


class BadMoment(CasfsError):
    """A moment that could not be understood, or one in the future."""


def parse_moment(text: str, now: float | None = None) -> float:
    """Unix seconds of `text` (see the module's doc); BadMoment when it is not one."""
    now = time.time() if now is None else now
    value = text.strip()
    if value.lower() == "now":
        return now
    if value.startswith("@"):
        try:
            moment = float(value[1:])
        except ValueError:
            raise BadMoment(f"not a moment: {text!r} (@ takes Unix seconds)") from None
        if moment > now:
            raise BadMoment(f"{text!r} is in the future; a view can only show what has "
                            "happened")
        return moment
    if _RELATIVE.fullmatch(value.lower()):
        try:
            return now - parse_duration(value)
        except ConfigError as e:
            raise BadMoment(str(e)) from None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadMoment(f"not a moment: {text!r} (give an ISO 8601 time such as "
                        "2026-11-20T14:00:00Z, a date such as 2026-11-20, a time ago "
                        "such as 3d or 2h30m, or now)") from None
    if _DATE.fullmatch(value) or parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    moment = parsed.timestamp()
    if moment > now:
        raise BadMoment(f"{text!r} is in the future ({format_moment(moment)}); "
                        "a view can only show what has happened")
    return moment


def format_moment(moment: float) -> str:
    """An ISO 8601 UTC time, to the microsecond when it has one."""
    shown = datetime.fromtimestamp(moment, UTC)
    text = shown.isoformat(timespec="microseconds" if shown.microsecond else "seconds")
    return text.replace("+00:00", "Z")
