"""``[base]/metadata``: the CapabilityStatement, saying exactly what this
server does (and, by leaving it out, what it does not)."""
from __future__ import annotations

from functools import lru_cache

from daemon import timeutil

from .validation import STORABLE

SEARCH_PARAMS = [
    ("patient", "reference", "Patient/id, a bare Patient id, or the patient's did:key"),
    ("subject", "reference", "the resource's subject/patient reference"),
    ("code", "token", "system|code over every coded element the server indexes"),
    ("identifier", "token", "system|value"),
    ("date", "date", "the clinical date, with prefixes eq ne gt lt ge le sa eb"),
    ("_text", "string", "full text over the indexed summary"),
    ("_content", "string", "same as _text"),
]
_INTERACTIONS = ["read", "vread", "update", "delete", "history-instance", "create", "search-type"]
SECURITY = ("Bearer tokens issued by this medvault node (Authorization: Bearer mvt_...). Scope read allows "
            "read, vread, history, search and $everything; write allows create, update, delete and the write "
            "entries of batch/transaction; share allows Consent create and delete (grants and their "
            "revocation). Whether a caller may read or change a given record is decided per record by the "
            "patient's grants: records the caller may not read are not found (404) and absent from searches.")


def _resource(rtype: str) -> dict:
    entry = {"type": rtype, "versioning": "versioned-update", "readHistory": True, "updateCreate": False,
             "conditionalCreate": False, "conditionalUpdate": False, "conditionalDelete": "not-supported",
             "interaction": [{"code": code} for code in _INTERACTIONS],
             "searchParam": [{"name": name, "type": kind, "documentation": doc}
                             for name, kind, doc in SEARCH_PARAMS if not (rtype == "Patient" and kind == "reference")]}
    if rtype == "Patient":
        entry["operation"] = [{"name": "everything",
                               "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}]
    return entry


@lru_cache(maxsize=1)
def _resources() -> tuple:
    derived = [
        {"type": "AuditEvent", "interaction": [{"code": "search-type"}],
         "searchParam": [{"name": "entity", "type": "reference", "documentation": "Type/id of a record"},
                         {"name": "agent", "type": "reference", "documentation": "the actor's did:key"}]},
        {"type": "Provenance", "interaction": [{"code": "read"}, {"code": "search-type"}],
         "searchParam": [{"name": "target", "type": "reference", "documentation": "Type/id of a record"}]},
    ]
    return tuple([_resource(t) for t in sorted(STORABLE)] + derived)


def statement(base: str, version: str) -> dict:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": timeutil.now(),
        "publisher": "medvault",
        "kind": "instance",
        "software": {"name": "medvault", "version": version},
        "implementation": {"description": "medvault: FHIR resources sealed end-to-end and pinned on IPFS",
                           "url": base},
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "rest": [{
            "mode": "server",
            "documentation": "Unknown search parameters are refused (400) unless the request says "
                             "Prefer: handling=lenient. _count is capped at 1000; _sort takes date or -date; "
                             "_summary=count returns the total only. Paging is by the next link.",
            "security": {"cors": False, "description": SECURITY,
                         "service": [{"text": "medvault bearer token with scopes"}]},
            "resource": [dict(r) for r in _resources()],
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
        }],
    }
