"""atheris target: the FHIR summarizer (daemon.fhir.summarize); what it returns
must also pass the metadata schema, since the vault signs it into the manifest."""
import json

import atheris
from _harness import fuzz, vectors

with atheris.instrument_imports():
    from daemon import fhir
    from daemon.errors import InvalidRecord
    from daemon.metadata import check_body

BODY = vectors()["inputs"]["metadata_body"]


def parse(data: bytes) -> None:
    summary = fhir.summarize(data)
    check_body({**BODY, "type": summary.resource_type, "subject": summary.subject, "date": summary.date,
                "codes": [list(c) for c in summary.codes], "identifiers": [list(i) for i in summary.identifiers],
                "text": summary.text}, 1024, 0, 3, 4096)


if __name__ == "__main__":
    seed = {"resourceType": "Observation", "subject": {"reference": "Patient/1"}, "effectiveDateTime": "2024-05-01",
            "code": {"coding": [{"system": "http://loinc.org", "code": "1-8", "display": "x"}]},
            "text": {"div": "<div>note</div>"}}
    fuzz("fhir", parse, (InvalidRecord,), [json.dumps(seed).encode()])
