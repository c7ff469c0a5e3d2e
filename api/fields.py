"""Kinds of request values. Each kind parses one client-given value into a
Python type, or raises BadRequest, and states the same rule as a JSON Schema,
so the parsers (api/inputs.py) and /openapi.json cannot disagree.

Query values arrive as text; JSON values arrive typed. ``parse`` takes either:
``from_text`` says the value came from a query string.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from daemon import timeutil
from daemon.errors import BadRequest
from daemon.identity import InvalidDid, check_did
from daemon.views import MAX_SQL_INT, future_time

_DIGITS = re.compile(r"^-?[0-9]{1,20}$")


class Invalid(ValueError):
    """A value that breaks its kind's rule; the caller names the field in the 400."""


def clean_text(value) -> str:
    """Text as every string field needs it: a str, no NUL, encodable as UTF-8
    (a lone surrogate from ``"\\ud800"`` in JSON would fail later in SQLite)."""
    if not isinstance(value, str):
        raise Invalid("must be a string")
    if "\x00" in value:
        raise Invalid("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid("must be valid Unicode text") from None
    return value


@dataclass(frozen=True)
class Text:
    """A string of bounded length, optionally matching a pattern (whole value)."""

    min_len: int = 0
    max_len: int = 1000
    pattern: str | None = None  # anchored with ^…$; the same text goes into the schema
    printable: bool = False
    fmt: str | None = None
    example: str | None = None  # a valid value, so generated positive tests get past this field

    def parse(self, value, from_text: bool = False):
        value = clean_text(value)
        if not self.min_len <= len(value) <= self.max_len:
            raise Invalid(f"must be {self.min_len} to {self.max_len} characters")
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise Invalid("has the wrong form")
        if self.printable and not value.isprintable():
            raise Invalid("must be printable characters")
        return value

    def schema(self) -> dict:
        out = {"type": "string", "minLength": self.min_len, "maxLength": self.max_len}
        if self.pattern:
            out["pattern"] = self.pattern
        if self.fmt:
            out["format"] = self.fmt
        if self.example:
            out["example"] = self.example
        return out


@dataclass(frozen=True)
class Integer:
    """A whole number in [low, high] (high defaults to what SQLite's INTEGER holds)."""

    low: int = 0
    high: int = MAX_SQL_INT

    def parse(self, value, from_text: bool = False) -> int:
        if from_text:
            if not isinstance(value, str) or not _DIGITS.match(value):
                raise Invalid("must be a whole number")
            value = int(value)
        elif not isinstance(value, int) or isinstance(value, bool):
            raise Invalid("must be a whole number")
        if not self.low <= value <= self.high:
            raise Invalid(f"must be between {self.low} and {self.high}")
        return value

    def schema(self) -> dict:
        return {"type": "integer", "format": "int64", "minimum": self.low, "maximum": self.high}


@dataclass(frozen=True)
class Number:
    """A finite decimal number in [low, high] (not nan, not inf)."""

    low: float
    high: float

    def parse(self, value, from_text: bool = False) -> float:
        try:
            number = float(value) if from_text else value
        except (TypeError, ValueError):
            number = None
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not self.low <= number <= self.high:
            raise Invalid(f"must be a number from {self.low:g} to {self.high:g}")
        return float(number)

    def schema(self) -> dict:
        return {"type": "number", "minimum": self.low, "maximum": self.high}


@dataclass(frozen=True)
class Boolean:
    """JSON true or false (not 0/1 or "true")."""

    def parse(self, value, from_text: bool = False) -> bool:
        if not isinstance(value, bool):
            raise Invalid("must be true or false")
        return value

    def schema(self) -> dict:
        return {"type": "boolean"}


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of strings."""

    values: tuple[str, ...]

    def parse(self, value, from_text: bool = False) -> str:
        if value not in self.values:
            raise Invalid(f"must be one of {', '.join(self.values)}")
        return value

    def schema(self) -> dict:
        return {"type": "string", "enum": list(self.values)}


@dataclass(frozen=True)
class Did(Text):
    """An Ed25519 did:key."""

    max_len: int = 100
    pattern: str = r"^did:key:z6Mk[1-9A-HJ-NP-Za-km-z]{40,50}$"
    example: str = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"

    def parse(self, value, from_text: bool = False) -> str:
        try:
            return check_did(super().parse(value))
        except InvalidDid:
            raise Invalid("must be an Ed25519 did:key") from None


@dataclass(frozen=True)
class Time(Text):
    """An RFC 3339 time with offset, canonicalised to UTC; ``future`` for expiries."""

    max_len: int = 40
    fmt: str = "date-time"
    future: bool = False

    def parse(self, value, from_text: bool = False) -> str:
        value = super().parse(value)
        if self.future:
            return future_time(value)  # its own 400 says "in the future"
        try:
            return timeutil.parse_time(value)
        except ValueError:
            raise Invalid("must be an RFC 3339 time with offset") from None


@dataclass(frozen=True)
class ListOf:
    """A list of ``item``; in a query string, the repeated parameter."""

    item: object
    min_items: int = 0
    max_items: int = 1000

    def parse(self, value, from_text: bool = False) -> list:
        if not isinstance(value, list):
            raise Invalid("must be a list")
        if not self.min_items <= len(value) <= self.max_items:
            raise Invalid(f"must hold {self.min_items} to {self.max_items} items")
        return [self.item.parse(v, from_text) for v in value]

    def schema(self) -> dict:
        return {"type": "array", "items": self.item.schema(), "minItems": self.min_items,
                "maxItems": self.max_items}


def bad(name: str, code: str | None, problem: str) -> BadRequest:
    return BadRequest(f"{name} {problem}", code or f"bad_{name}")


RECORD_ID = Text(26, 26, r"^[a-z2-7]{26}$")
LIMIT = Integer(1, 1000)
CLINICAL_DATE = Text(4, 40, timeutil.DATE_PATTERN)
