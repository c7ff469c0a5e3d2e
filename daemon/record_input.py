"""Validation of what a client says about a record it uploads (query fields
and media type), so bad input is refused before a single byte is stored."""
from __future__ import annotations

from dataclasses import dataclass, field

from . import timeutil
from .errors import BadRequest, UnsupportedMediaType
from .identity import InvalidDid, check_did
from .metadata import MAX_TAGS, MAX_TITLE, RECORD_TYPE, media_type_base  # the format's limits, enforced on read


@dataclass
class RecordInput:
    patient: str | None = None
    type: str | None = None
    title: str | None = None
    tags: list[str] = field(default_factory=list)
    date: str | None = None

    def validated(self) -> "RecordInput":
        if self.patient is not None:
            try:
                check_did(self.patient)
            except InvalidDid:
                raise BadRequest("patient must be an Ed25519 did:key", "bad_patient") from None
        if self.type is not None and not RECORD_TYPE.fullmatch(self.type):
            raise BadRequest("type must be a short identifier such as 'Observation'", "bad_type")
        if self.title is not None and not (0 < len(self.title) <= MAX_TITLE and "\x00" not in self.title):
            raise BadRequest(f"title must be 1 to {MAX_TITLE} characters without NUL", "bad_title")
        if len(self.tags) > MAX_TAGS or any(not (0 < len(t) <= 64) or not t.isprintable() for t in self.tags):
            raise BadRequest(f"at most {MAX_TAGS} tags of 1 to 64 printable characters", "bad_tag")
        self.tags = list(dict.fromkeys(self.tags))
        if self.date is not None:
            try:
                timeutil.check_clinical_date(self.date)
            except ValueError:
                raise BadRequest("date must be an ISO 8601 date or date-time", "bad_date") from None
        return self


def check_media_type(content_type: str | None) -> tuple[str, str]:
    """Returns (the full media type as given, its lower-case base type) or 415."""
    if not content_type:
        raise UnsupportedMediaType("a Content-Type header naming the record's media type is required")
    base = media_type_base(content_type.strip())
    if len(content_type) > 255 or base is None:
        raise UnsupportedMediaType("the Content-Type is not a valid media type")
    return content_type.strip(), base
