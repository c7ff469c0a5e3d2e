"""One time format everywhere (RFC 3339 UTC, milliseconds, ``Z``) so stored
times compare correctly as strings in SQL.

Every reading of the wall clock goes through :func:`clock`. Expiry (grants,
tokens, break-glass) is decided by comparing stored times with it, so tests
move it with :func:`frozen_at` / :func:`shifted` instead of sleeping across
real seconds or minutes. Production code never replaces it.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

# ASCII digits only (``\d`` would take any Unicode digit); the API's schema uses the same text.
DATE_PATTERN = r"^[0-9]{4}(-[0-9]{2}(-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?$"
_DATE = re.compile(DATE_PATTERN)


def _system_clock() -> datetime:
    return datetime.now(timezone.utc)


_source: Callable[[], datetime] = _system_clock


def clock() -> datetime:
    """The current moment (aware, UTC): the only place the daemon reads the wall clock."""
    return _source()


@contextmanager
def _set_source(source: Callable[[], datetime]) -> Iterator[None]:
    global _source
    previous, _source = _source, source
    try:
        yield
    finally:
        _source = previous


@contextmanager
def frozen_at(moment: datetime) -> Iterator[None]:
    """For tests: inside the block the clock stands still at ``moment``."""
    if moment.tzinfo is None:
        raise ValueError("a frozen moment needs a UTC offset")
    with _set_source(lambda: moment):
        yield


@contextmanager
def shifted(delta: timedelta) -> Iterator[None]:
    """For tests: inside the block the clock reads ``delta`` later than it
    would (blocks nest and add up; a frozen clock stays frozen, moved)."""
    outer = _source
    with _set_source(lambda: outer() + delta):
        yield


def format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now() -> str:
    return format_time(clock())


def parse_time(text: str) -> str:
    """An RFC 3339 time with offset → the canonical form; ValueError otherwise.

    A time whose UTC equivalent falls outside years 1..9999 (``9999-12-31T23:59:59-23:59``)
    is a ValueError too: ``astimezone`` would raise OverflowError, a 500 at the API."""
    if not isinstance(text, str):
        raise ValueError("not a time")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("a time needs a UTC offset")
    try:
        return format_time(moment)
    except OverflowError:
        raise ValueError("the time is outside years 1 to 9999 in UTC") from None


def check_clinical_date(text: str) -> str:
    """FHIR-style dates (``2024``, ``2024-05``, ``2024-05-01``, or a dateTime) kept as
    written so that partial dates still sort and compare as strings."""
    if not isinstance(text, str) or not _DATE.fullmatch(text):
        raise ValueError("not a date")
    return text
