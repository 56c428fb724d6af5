"""Moments as people name them (casfs/moments.py)."""

from datetime import UTC, datetime

import pytest

from casfs.moments import BadMoment, format_moment, parse_moment

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-20T14:00:00Z", datetime(2026, 11, 20, 14, tzinfo=UTC)),
    ("2026-11-20T14:00:00", datetime(2026, 11, 20, 14, tzinfo=UTC)),  # no offset: UTC
    ("2026-11-20T15:00:00+01:00", datetime(2026, 11, 20, 14, tzinfo=UTC)),
    ("2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),
    ("3d", datetime(2026, 11, 19, 12, tzinfo=UTC)),
    ("2h30m", datetime(2026, 11, 22, 9, 30, tzinfo=UTC)),
    ("now", datetime(2026, 11, 22, 12, tzinfo=UTC)),
])
def test_moments_people_write(text: str, expected: datetime) -> None:
    assert parse_moment(text, now=NOW) == expected.timestamp()


@pytest.mark.parametrize(("text", "message"), [
    ("yesterday", "not a moment"),
    ("2026-13-01", "not a moment"),
    ("3x", "not a moment"),
    ("2026-11-23", "in the future"),
])
def test_what_is_not_a_moment_is_named(text: str, message: str) -> None:
    with pytest.raises(BadMoment, match=message) as info:
        parse_moment(text, now=NOW)
    assert repr(text) in str(info.value)


def test_moments_print_as_iso_8601_utc() -> None:
    assert format_moment(NOW) == "2026-11-22T12:00:00Z"
    assert format_moment(NOW + 0.25) == "2026-11-22T12:00:00.250000Z"
    assert parse_moment(format_moment(NOW + 0.25), now=NOW + 1) == NOW + 0.25
