"""One time format everywhere (RFC 3339 UTC, milliseconds, ``Z``) so stored
times compare correctly as strings in SQL."""
from __future__ import annotations

import re
from datetime import datetime, timezone

_DATE = re.compile(r"[0-9]{4}(-[0-9]{2}(-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?")


def format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now() -> str:
    return format_time(datetime.now(timezone.utc))


def parse_time(text: str) -> str:
    """An RFC 3339 time with offset → the canonical form; ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError("not a time")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("a time needs a UTC offset")
    return format_time(moment)


def check_clinical_date(text: str) -> str:
    """FHIR-style dates (``2024``, ``2024-05``, ``2024-05-01``, or a dateTime) kept as
    written so that partial dates still sort and compare as strings."""
    if not isinstance(text, str) or not _DATE.fullmatch(text):
        raise ValueError("not a date")
    return text
