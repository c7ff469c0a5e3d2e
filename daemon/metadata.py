"""The schema of a manifest's signed metadata ``body`` (FORMAT.md, "Metadata").

A valid signature only says who wrote a body; an author's key made offline
can sign anything. So every body is checked against this schema before the
node indexes or acts on a single field: exact keys, exact types, ranges, and
a size consistent with the manifest's chunk tree. The limits here are the
format's; the writers (record input, FHIR summary) are held to the same ones.
"""
from __future__ import annotations

import re

from . import strict, timeutil
from .cid import DAG_CBOR, Cid
from .metadata_limits import (MAX_CODE, MAX_CODES, MAX_CONTENT_TYPE, MAX_DATE, MAX_IDENTIFIER,  # noqa: F401
                              MAX_IDENTIFIERS, MAX_SIZE, MAX_SUBJECT, MAX_SYSTEM, MAX_TAG, MAX_TAGS, MAX_TEXT,
                              MAX_TITLE, MAX_VERSION)
from .strict import FieldError

RECORD_ID = re.compile(r"[a-z2-7]{26}")
MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
RECORD_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
FIELDS = frozenset({"record", "version", "prev", "content_type", "size", "patient", "type", "title", "tags",
                    "date", "subject", "codes", "text", "author", "created"})
# Added after the first records were written; absent means [] (FORMAT.md).
OPTIONAL_FIELDS = frozenset({"identifiers"})


class MetadataError(FieldError):
    """Signed metadata breaks the schema; ``path`` names the field (``body.tags[3]``)."""


def _optional(check, value, path: str, *args):
    return None if value is None else check(value, path, *args)


def _matching(pattern: re.Pattern, value, path: str, high: int, what: str) -> str:
    strict.text(value, path, 1, high)
    if not pattern.fullmatch(value):
        raise FieldError(path, f"must be {what}")
    return value


def _type(value, path: str) -> str:
    return _matching(RECORD_TYPE, value, path, 64, "a short type name such as 'Observation'")


def media_type_base(value: str) -> str | None:
    """The lower-case ``type/subtype`` of a media type as the body stores it, or
    None when the value is not one (the upload path and the reader share this)."""
    if not 0 < len(value) <= MAX_CONTENT_TYPE or not value.isprintable():
        return None
    base = value.split(";", 1)[0].strip().lower()
    return base if MEDIA_TYPE.fullmatch(base) else None


def _content_type(value, path: str) -> str:
    strict.text(value, path, 1, MAX_CONTENT_TYPE)
    if media_type_base(value) is None:
        raise FieldError(path, "must be a media type")
    return value


def _prev(value, path: str, version: int) -> None:
    if version == 1:
        if value is not None:
            raise FieldError(path, "must be null for version 1")
        return
    strict.text(value, path, 1, 100)
    try:
        cid = Cid.parse(value)
    except ValueError:
        cid = None
    if cid is None or cid.codec != DAG_CBOR or str(cid) != value:
        raise FieldError(path, "must be a dag-cbor CID in base32")


def _tags(value, path: str) -> None:
    if type(value) is not list or len(value) > MAX_TAGS:
        raise FieldError(path, f"must be a list of at most {MAX_TAGS} tags")
    for i, tag in enumerate(value):
        strict.text(tag, f"{path}[{i}]", 1, MAX_TAG)
        if not tag.isprintable():
            raise FieldError(f"{path}[{i}]", "must be printable")
    if len(set(value)) != len(value):
        raise FieldError(path, "must not repeat a tag")


def _date(value, path: str) -> None:
    strict.text(value, path, 4, MAX_DATE)
    try:
        timeutil.check_clinical_date(value)
    except ValueError:
        raise FieldError(path, "must be an ISO 8601 date or date-time") from None


def _pairs(value, path: str, most: int, longest: int) -> None:
    """A list of at most ``most`` [system, value] pairs (codes, identifiers)."""
    if type(value) is not list or len(value) > most:
        raise FieldError(path, f"must be a list of at most {most} [system, value] pairs")
    for i, pair in enumerate(value):
        if type(pair) is not list or len(pair) != 2:
            raise FieldError(f"{path}[{i}]", "must be a [system, value] pair")
        strict.text(pair[0], f"{path}[{i}][0]", 0, MAX_SYSTEM)
        strict.text(pair[1], f"{path}[{i}][1]", 1, longest)


def _check_tree(size: int, chunk_size: int, depth: int, top_links: int, fanout: int) -> None:
    """The manifest's tree must be able to hold exactly the chunks ``size`` needs:
    at depth 0 its links are those chunks; higher up each top link reaches at
    least one and at most fanout**depth of them (the reader checks the total)."""
    chunks = max(1, -(-size // chunk_size))
    fits = top_links == chunks if depth == 0 else top_links <= chunks <= top_links * fanout ** depth
    if not fits:
        raise FieldError("body.size", "does not match the manifest's chunk count")


def check_body(body, chunk_size: int, depth: int, top_links: int, fanout: int, padded: int | None = None) -> dict:
    """Returns ``body`` when it satisfies the schema and matches the manifest's
    tree shape; raises MetadataError naming the first offending field. For a
    padded record (format 2) the tree holds ``padded`` bytes, which must hold
    ``size``: the padding cannot be negative."""
    try:
        strict.exact_map(body, "body", FIELDS, OPTIONAL_FIELDS)
        _matching(RECORD_ID, body["record"], "body.record", 26, "a 26-character base32 record id")
        version = strict.integer(body["version"], "body.version", 1, MAX_VERSION)
        _prev(body["prev"], "body.prev", version)
        _content_type(body["content_type"], "body.content_type")
        size = strict.integer(body["size"], "body.size", 1, MAX_SIZE)  # an empty record is never written
        _optional(strict.did, body["patient"], "body.patient")
        _optional(_type, body["type"], "body.type")
        _optional(strict.text, body["title"], "body.title", 1, MAX_TITLE)
        _tags(body["tags"], "body.tags")
        _optional(_date, body["date"], "body.date")
        _optional(strict.text, body["subject"], "body.subject", 0, MAX_SUBJECT)
        _pairs(body["codes"], "body.codes", MAX_CODES, MAX_CODE)
        if "identifiers" in body:
            _pairs(body["identifiers"], "body.identifiers", MAX_IDENTIFIERS, MAX_IDENTIFIER)
        _optional(strict.text, body["text"], "body.text", 0, MAX_TEXT)
        strict.did(body["author"], "body.author")
        strict.time(body["created"], "body.created")
        if padded is not None and size > padded:
            raise FieldError("body.size", "is larger than the manifest's padded length")
        _check_tree(size if padded is None else padded, chunk_size, depth, top_links, fanout)
    except MetadataError:
        raise
    except FieldError as exc:
        raise MetadataError(exc.path, exc.problem) from None
    return body
