"""An independent R4 check of what /fhir answers: fhirclient's R4 (4.0.1)
models, strict, which the server does not use (it validates with
fhir.resources' R4B models). Every resource inside a Bundle, and every
entry's outcome, is checked on its own as well."""
from __future__ import annotations

import copy

from fhirclient.models.fhirelementfactory import FHIRElementFactory


def check_r4(doc: dict) -> dict:
    """``doc`` when it is a valid R4 resource; raises FHIRValidationError (or AssertionError) otherwise."""
    assert isinstance(doc, dict) and isinstance(doc.get("resourceType"), str), doc
    model = FHIRElementFactory.instantiate(doc["resourceType"], copy.deepcopy(doc))
    assert type(model).__name__ == doc["resourceType"], f"not an R4 resource type: {doc['resourceType']}"
    for entry in doc.get("entry", []) if doc["resourceType"] == "Bundle" else ():
        if "resource" in entry:
            check_r4(entry["resource"])
        if "outcome" in entry.get("response", {}):
            check_r4(entry["response"]["outcome"])
    return doc
