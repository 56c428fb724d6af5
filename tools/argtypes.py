"""argparse types for the values operators type: times, sizes, durations."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime

from casfs.durations import parse_duration
from casfs.errors import ConfigError

_SIZE = re.compile(r"^(\d+)([kmgt]?)i?b?$", re.IGNORECASE)


def duration(text: str) -> float:
    """0, 90s, 90m, 12h, 7d, 2w."""
    try:
        return parse_duration(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def moment(text: str) -> float:
    """An ISO 8601 time (UTC unless it says otherwise), as Unix seconds."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def size(text: str) -> int:
    """Bytes, or with a binary unit: 512, 10k, 5M, 1G."""
    match = _SIZE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512, 10k, 5M, 1G)")
    multiplier: int = 1024 ** " kmgt".index(match.group(2).lower() or " ")
    return int(match.group(1)) * multiplier
