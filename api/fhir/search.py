"""FHIR search parameters translated onto medvault's one search
(daemon/search_params: FHIR date prefixes, ``system|code`` tokens, repeat =
AND, comma = OR, keyset cursors). Nothing is searched a second way here.

| FHIR | medvault | note |
|---|---|---|
| (the type in the URL) | type | |
| patient, subject | patient / subject | ``Patient/x``, a bare id ``x`` (= ``Patient/x``), or a did:key |
| code, identifier | code, identifier | token ``system|code``; codes of every coded element are indexed together |
| date | date | ``[prefix]date`` |
| _text, _content | q | full text over the indexed summary |
| _count | _count | at most 1000: a larger count is served as 1000 (FHIR lets the server cap it) |
| _sort | _sort | ``date`` or ``-date`` |
| _summary | | ``count`` (only the total) or ``false`` |
| _cursor | cursor | the ``next`` link's position |

Any other parameter is a 400, or ignored (and left out of the ``self``
link, as FHIR asks) when the client sends ``Prefer: handling=lenient``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

from daemon.errors import BadRequest
from daemon.views import MAX_PAGE

DEFAULT_COUNT = 50
_DIRECT = {"code": "code", "identifier": "identifier", "date": "date", "_text": "q", "_content": "q",
           "_sort": "_sort", "_cursor": "cursor"}
_IGNORED = {"_format", "_pretty"}  # answered by content negotiation, not search


@dataclass
class Translated:
    """The medvault search items, the FHIR parameters they came from (for links)."""

    items: list[tuple[str, str]]
    used: list[tuple[str, str]] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    summary_count: bool = False


def lenient(prefer: str | None) -> bool:
    """``Prefer: handling=lenient`` (RFC 7240 preference, FHIR's search handling)."""
    return any(part.strip().replace(" ", "") == "handling=lenient" for part in (prefer or "").split(";")
               for part in part.split(","))


def _reference(name: str, value: str) -> tuple[str, str]:
    alternatives = []
    for v in value.split(","):
        if v and "/" not in v and not v.startswith("did:"):
            v = f"Patient/{v}"  # FHIR: a bare id on patient= is a Patient's
        alternatives.append(v)
    joined = ",".join(alternatives)
    if all(v.startswith("did:") for v in alternatives):
        return "patient", joined
    return "subject", joined


def translate(rtype: str, params: list[tuple[str, str]], is_lenient: bool) -> Translated:
    """FHIR search parameters of ``rtype`` → items for ``search_params.parse``."""
    out = Translated([("type", rtype)])
    for name, value in params:
        if name in _IGNORED:
            continue
        if name in ("patient", "subject") and rtype != "Patient":
            out.items.append(_reference(name, value))
        elif name in _DIRECT:
            out.items.append((_DIRECT[name], value))
        elif name == "_count":
            if not value.isdigit() or len(value) > 9:
                raise BadRequest("search parameter _count: a whole number", "bad_count")
            out.count = min(int(value), MAX_PAGE)
            out.summary_count = out.summary_count or out.count == 0
            value = str(out.count)  # the self link says what was done
        elif name == "_summary" and value in ("count", "false"):
            out.summary_count = out.summary_count or value == "count"
        elif is_lenient:
            continue
        else:
            raise BadRequest(f"unknown or unsupported search parameter: {name[:40]}"
                             " (send Prefer: handling=lenient to have it ignored)", "unknown_parameter")
        out.used.append((name, value))
    out.items.append(("_count", str(max(out.count, 1))))
    return out


def link(base: str, rtype: str, used: list[tuple[str, str]], cursor: str | None = None) -> str:
    params = [(n, v) for n, v in used if n != "_cursor"] + ([("_cursor", cursor)] if cursor else [])
    return f"{base}/{rtype}" + (f"?{urlencode(params)}" if params else "")
