"""What medvault indexes from a FHIR R4 JSON resource (not full FHIR validation).

A resource must be a JSON object with a ``resourceType`` of FHIR's shape;
anything else is an invalid record (422). From it we take the type, the
subject/patient reference, the clinically relevant date (the field FHIR's
``date``/``clinical-date`` search parameter uses for that resource type),
every coding (system, code) of its coded elements — including each
``component``'s code and value — its identifiers (system, value), and a
short plain-text summary for search. What we take goes into the signed
metadata, so it is held to the metadata schema's limits here (daemon.metadata):
a reader refuses anything longer, and a NUL anywhere we copy from is a 422.
"""
from __future__ import annotations

import html
import json
import re

from indexer import dates

from . import timeutil
from .errors import InvalidRecord
from .metadata_limits import (MAX_CODE, MAX_CODES, MAX_DATE, MAX_IDENTIFIER, MAX_IDENTIFIERS, MAX_SUBJECT,
                              MAX_SYSTEM, MAX_TEXT)  # not .metadata: the parse worker imports only this module's needs

MEDIA_TYPE = "application/fhir+json"


def is_fhir(content_type: str) -> bool:
    """Whether a record's media type (parameters aside) is FHIR JSON."""
    return content_type.split(";", 1)[0].strip().lower() == MEDIA_TYPE

_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
# Where each resource type keeps its clinical date, in order of preference
# (a ``*Period`` contributes its start); other types fall back to _DATE_FIELDS.
_DATES_BY_TYPE = {
    "Observation": ("effectiveDateTime", "effectiveInstant", "effectivePeriod", "issued"),
    "DiagnosticReport": ("effectiveDateTime", "effectivePeriod", "issued"),
    "Condition": ("onsetDateTime", "onsetPeriod", "recordedDate"),
    "Procedure": ("performedDateTime", "performedPeriod"),
    "Encounter": ("period",),
    "MedicationRequest": ("authoredOn",),
    "MedicationStatement": ("effectiveDateTime", "effectivePeriod", "dateAsserted"),
    "MedicationAdministration": ("effectiveDateTime", "effectivePeriod"),
    "Immunization": ("occurrenceDateTime", "recorded"),
    "AllergyIntolerance": ("onsetDateTime", "recordedDate"),
    "CarePlan": ("period", "created"),
    "CareTeam": ("period",),
    "Claim": ("billablePeriod", "created"),
    "ExplanationOfBenefit": ("billablePeriod", "created"),
    "DocumentReference": ("date",),
    "Patient": ("birthDate",),
}
_DATE_FIELDS = ("effectiveDateTime", "issued", "date", "authoredOn", "recordedDate", "onsetDateTime",
                "occurrenceDateTime", "performedDateTime", "created", "birthDate", "effectivePeriod", "period",
                "performedPeriod")
_CODED_FIELDS = ("code", "category", "type", "vaccineCode", "medicationCodeableConcept", "class",
                 "valueCodeableConcept", "reasonCode")
_REFERENCE_FIELDS = ("subject", "patient", "beneficiary")
_TAGS = re.compile(r"<[^>]+>")


class FhirSummary:
    """What a resource gives its record's metadata. A plain class, not a
    dataclass: ``dataclasses`` (and ``inspect``) would be ~1.3 MB of the
    parse worker's few."""

    __slots__ = ("resource_type", "subject", "date", "codes", "identifiers", "text")

    def __init__(self, resource_type: str, subject: str | None = None, date: str | None = None,
                 codes: list[tuple[str, str]] | None = None, identifiers: list[tuple[str, str]] | None = None,
                 text: str = ""):
        self.resource_type = resource_type
        self.subject = subject
        self.date = date
        self.codes = [] if codes is None else codes
        self.identifiers = [] if identifiers is None else identifiers
        self.text = text

    def _fields(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other) -> bool:
        return self._fields() == other._fields() if type(other) is FhirSummary else NotImplemented

    def __repr__(self) -> str:
        return "FhirSummary(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__) + ")"


def _string(value) -> str | None:
    """A string we may copy into the metadata; NUL is not FHIR text (nor ours)."""
    if not isinstance(value, str):
        return None
    if "\x00" in value:
        raise InvalidRecord("the FHIR resource contains a NUL character")
    return value


def _codings(value) -> list[tuple[str, str, str]]:
    """(system, code, display) of every coding in a CodeableConcept, a list of them, or a Coding."""
    out = []
    for item in value if isinstance(value, list) else [value]:
        if not isinstance(item, dict):
            continue
        codings = item.get("coding") if isinstance(item.get("coding"), list) else [item]
        for coding in codings:
            if isinstance(coding, dict) and (code := _string(coding.get("code"))) is not None:
                out.append((_string(coding.get("system")) or "", code, _string(coding.get("display")) or ""))
        if (text := _string(item.get("text"))) is not None:
            out.append(("", "", text))
    return out


def summarize_buffer(body: bytearray) -> FhirSummary:
    """``summarize`` for the parse worker's own copy of a big body: decoded
    (as ``json.loads`` decodes bytes), then the copy is emptied before the
    parse, so the raw body, its text and the parsed objects are never all
    resident at once (16 MB less at a 16 MiB body). Never call it on a
    buffer anyone still needs."""
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")
    except UnicodeDecodeError:
        raise InvalidRecord("the body is not valid JSON (or nests too deeply)") from None
    body.clear()
    return summarize(text)


def summarize(body: bytes | str) -> FhirSummary:
    try:
        resource = json.loads(body)
    except (ValueError, RecursionError):  # bad UTF-8 or JSON, over-long numbers, deep nesting
        raise InvalidRecord("the body is not valid JSON (or nests too deeply)") from None
    if not isinstance(resource, dict):
        raise InvalidRecord("a FHIR resource must be a JSON object")
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not _TYPE.fullmatch(rtype):
        raise InvalidRecord("the FHIR resource has no valid resourceType")
    summary = FhirSummary(rtype)
    for key in _REFERENCE_FIELDS:
        ref = resource.get(key)
        if isinstance(ref, dict) and (reference := _string(ref.get("reference"))) is not None:
            summary.subject = reference[:MAX_SUBJECT]
            break
    summary.date = _clinical_date(resource, _DATES_BY_TYPE.get(rtype, _DATE_FIELDS))
    words = [rtype]
    coded = [resource.get(key) for key in _CODED_FIELDS]
    for component in resource.get("component") if isinstance(resource.get("component"), list) else ():
        if isinstance(component, dict):
            coded += [component.get("code"), component.get("valueCodeableConcept")]
    for value in coded:
        for system, code, display in _codings(value):
            if code:
                summary.codes.append((system[:MAX_SYSTEM], code[:MAX_CODE]))
            if display:
                words.append(display)
    for ident in resource.get("identifier") if isinstance(resource.get("identifier"), list) else ():
        if isinstance(ident, dict) and (value := _string(ident.get("value"))):
            summary.identifiers.append(((_string(ident.get("system")) or "")[:MAX_SYSTEM], value[:MAX_IDENTIFIER]))
    narrative = resource.get("text")
    if isinstance(narrative, dict) and (div := _string(narrative.get("div"))) is not None:
        words.append(html.unescape(_TAGS.sub(" ", div)).replace("\x00", " "))  # "&#0;" is not NUL, but be sure
    summary.codes = list(dict.fromkeys(summary.codes))[:MAX_CODES]
    summary.identifiers = list(dict.fromkeys(summary.identifiers))[:MAX_IDENTIFIERS]
    summary.text = " ".join(" ".join(words).split())[:MAX_TEXT]
    return summary


def _clinical_date(resource: dict, fields: tuple[str, ...]) -> str | None:
    """The first of ``fields`` holding a valid FHIR date (a period gives its start)."""
    for key in fields:
        value = resource.get(key)
        if isinstance(value, dict):
            value = value.get("start")
        value = _string(value)
        if value is not None and len(value) <= MAX_DATE:
            try:  # the metadata schema's form, and a real calendar date
                dates.date_range(timeutil.check_clinical_date(value))
            except ValueError:
                continue
            return value
    return None
