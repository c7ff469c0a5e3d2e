"""What medvault indexes from a FHIR R4 JSON resource (not full FHIR validation).

A resource must be a JSON object with a ``resourceType`` of FHIR's shape;
anything else is an invalid record (422). From it we take the type, the
subject/patient reference, the clinically relevant date, every coding
(system, code) found under ``code``/``category``/``type``/``vaccineCode``/
``medicationCodeableConcept``, and a short plain-text summary for search.
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field

from .errors import InvalidRecord

MEDIA_TYPE = "application/fhir+json"
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_DATE_FIELDS = ("effectiveDateTime", "issued", "date", "authoredOn", "recordedDate", "onsetDateTime",
                "occurrenceDateTime", "performedDateTime", "created", "birthDate")
_PERIOD_FIELDS = ("effectivePeriod", "period", "performedPeriod")
_CODED_FIELDS = ("code", "category", "type", "vaccineCode", "medicationCodeableConcept", "class")
_TAGS = re.compile(r"<[^>]+>")
_MAX_TEXT = 4000


@dataclass
class FhirSummary:
    resource_type: str
    subject: str | None = None
    date: str | None = None
    codes: list[tuple[str, str]] = field(default_factory=list)
    text: str = ""


def _codings(value) -> list[tuple[str, str, str]]:
    """(system, code, display) of every coding in a CodeableConcept, a list of them, or a Coding."""
    out = []
    for item in value if isinstance(value, list) else [value]:
        if not isinstance(item, dict):
            continue
        codings = item.get("coding") if isinstance(item.get("coding"), list) else [item]
        for coding in codings:
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                out.append((str(coding.get("system") or ""), coding["code"], str(coding.get("display") or "")))
        if isinstance(item.get("text"), str):
            out.append(("", "", item["text"]))
    return out


def summarize(body: bytes) -> FhirSummary:
    try:
        resource = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidRecord("the body is not valid JSON") from None
    if not isinstance(resource, dict):
        raise InvalidRecord("a FHIR resource must be a JSON object")
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not _TYPE.match(rtype):
        raise InvalidRecord("the FHIR resource has no valid resourceType")
    summary = FhirSummary(rtype)
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            summary.subject = ref["reference"][:200]
            break
    for key in _DATE_FIELDS:
        if isinstance(resource.get(key), str):
            summary.date = resource[key][:40]
            break
    else:
        for key in _PERIOD_FIELDS:
            period = resource.get(key)
            if isinstance(period, dict) and isinstance(period.get("start"), str):
                summary.date = period["start"][:40]
                break
    words = [rtype]
    for key in _CODED_FIELDS:
        for system, code, display in _codings(resource.get(key)):
            if code:
                summary.codes.append((system[:200], code[:100]))
            if display:
                words.append(display)
    narrative = resource.get("text")
    if isinstance(narrative, dict) and isinstance(narrative.get("div"), str):
        words.append(html.unescape(_TAGS.sub(" ", narrative["div"])))
    summary.codes = list(dict.fromkeys(summary.codes))
    summary.text = " ".join(" ".join(words).split())[:_MAX_TEXT]
    return summary
