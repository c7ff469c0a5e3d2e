"""Clinical dates as FHIR means them: an instant range with a precision.

``2024`` is the whole year, ``2024-05`` the month, ``2024-05-01`` the day,
``2024-05-01T10:30Z`` the minute; a value with an offset is moved to UTC.
Each becomes ``[lo, hi]`` in UTC epoch milliseconds (both inclusive), which
is what the index stores and compares, so partial dates and time zones
compare correctly (a string compare does not). Dates and date-times without
an offset are read as UTC (FHIR leaves them "local"; a node has no better
guess, and DECISIONS.md says so).

Search prefixes (FHIR R4 ``date`` semantics), for a search range S and a
stored range T: ``eq`` T within S; ``ne`` not eq; ``gt`` T ends after S;
``lt`` T starts before S; ``ge`` T ends at or after S starts; ``le`` T
starts at or before S ends; ``sa`` T starts after S; ``eb`` T ends before S.
"""
from __future__ import annotations

import calendar
import re
from datetime import datetime, timedelta, timezone

_FORM = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:[T ](?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$")
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
MIN_YEAR, MAX_YEAR = 1, 9999
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def date_range(text: str) -> tuple[int, int]:
    """``text`` → (lo, hi) UTC epoch ms, inclusive; ValueError when it is not
    a valid FHIR date/dateTime/instant (month 13, day 45, offset ±24h...)."""
    match = _FORM.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError("not a FHIR date")
    g = match.groupdict()
    year = int(g["y"])
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise ValueError("year out of range")
    tz = timezone.utc
    if g["tz"] and g["tz"] != "Z":
        sign = 1 if g["tz"][0] == "+" else -1
        hours, minutes = int(g["tz"][1:3]), int(g["tz"][4:6])
        if hours > 14 or minutes > 59:
            raise ValueError("offset out of range")
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    if g["m"] is None:
        start, step = datetime(year, 1, 1, tzinfo=tz), "year"
    elif g["d"] is None:
        start, step = datetime(year, int(g["m"]), 1, tzinfo=tz), "month"
    elif g["H"] is None:
        start, step = datetime(year, int(g["m"]), int(g["d"]), tzinfo=tz), "day"
    else:
        fraction = (g["f"] or "")[:3].ljust(3, "0")
        start = datetime(year, int(g["m"]), int(g["d"]), int(g["H"]), int(g["M"]), int(g["S"] or 0),
                         int(fraction) * 1000, tzinfo=tz)
        step = "ms" if g["f"] else "second" if g["S"] else "minute"
    if step == "year":
        return _ms(start), _ms(datetime(year, 12, 31, 23, 59, 59, 999000, tzinfo=tz))
    if step == "month":
        last = calendar.monthrange(year, start.month)[1]
        return _ms(start), _ms(start.replace(day=last, hour=23, minute=59, second=59, microsecond=999000))
    length = {"day": timedelta(days=1), "minute": timedelta(minutes=1), "second": timedelta(seconds=1),
              "ms": timedelta(milliseconds=1)}[step]
    lo = _ms(start)
    return lo, lo + length // timedelta(milliseconds=1) - 1


def split_prefix(text: str) -> tuple[str, str]:
    """``ge2020-01`` → ("ge", "2020-01"); no prefix means ``eq``."""
    if isinstance(text, str) and text[:2] in PREFIXES:
        return text[:2], text[2:]
    return "eq", text


def condition(prefix: str, lo: int, hi: int, n: int) -> tuple[str, dict]:
    """The SQL over ``r.date_lo``/``r.date_hi`` for one prefixed date; names its
    parameters with ``n`` so several can be ANDed."""
    a, b = f"dlo{n}", f"dhi{n}"
    sql = {
        "eq": f"(r.date_lo >= :{a} AND r.date_hi <= :{b})",
        "ne": f"NOT (r.date_lo >= :{a} AND r.date_hi <= :{b})",
        "gt": f"r.date_hi > :{b}",
        "lt": f"r.date_lo < :{a}",
        "ge": f"r.date_hi >= :{a}",
        "le": f"r.date_lo <= :{b}",
        "sa": f"r.date_lo > :{b}",
        "eb": f"r.date_hi < :{a}",
    }[prefix]
    return f"(r.date_lo IS NOT NULL AND {sql})", {a: lo, b: hi}
