"""atheris target: what /fhir parses from a client before any engine call:
a body (JSON, depth, R4 validation) and a Bundle's entries (request shape,
urls, ifMatch). Refusals are VaultErrors (400/404/422); anything else that
escapes would be a 500."""
import json

import atheris
from _harness import fuzz

with atheris.instrument_imports():
    from api.fhir import resources, transaction
    from api.fhir.validation import parse_json, validate
    from daemon.errors import VaultError


def parse(data: bytes) -> None:
    body = parse_json(data)
    if body.get("resourceType") == "Bundle":
        for kind in ("batch", "transaction"):
            for entry in transaction.entries(body, kind):
                resources.if_match(entry.if_match)
    else:
        validate(body)


if __name__ == "__main__":
    seeds = [{"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
             {"resourceType": "Bundle", "type": "transaction", "entry": [
                 {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient"},
                  "request": {"method": "PUT", "url": "Patient/abc", "ifMatch": 'W/"1"'}}]}]
    fuzz("fhir_rest", parse, (VaultError,), [json.dumps(s).encode() for s in seeds])
