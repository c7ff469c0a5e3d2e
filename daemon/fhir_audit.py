"""Audit entries as FHIR R4 AuditEvent resources (a Bundle), so a patient's
access history can go to any FHIR system."""
from __future__ import annotations

_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_ACTION = {"write": "C", "import": "C", "view": "R", "read": "R", "versions": "R", "export": "R", "update": "U",
           "grant": "E", "revoke": "E", "erase": "D", "break_glass": "E"}
_OUTCOME = {"ok": "0", "denied": "4"}


def audit_event(entry: dict) -> dict:
    event = {
        "resourceType": "AuditEvent",
        "id": f"medvault-{entry['seq']}",
        "type": {"system": _DCM, "code": "110110", "display": "Patient Record"},
        "subtype": [{"system": "urn:medvault:audit-action", "code": entry["action"]}],
        "action": _ACTION.get(entry["action"], "E"),
        "recorded": entry["time"],
        "outcome": _OUTCOME.get(entry["outcome"], "8"),
        "agent": [{"who": {"identifier": {"system": "urn:ietf:rfc:3986", "value": entry["actor"] or "anonymous"}},
                   "requestor": True}],
        "source": {"observer": {"display": "medvault"}},
        "extension": [{"url": "urn:medvault:audit-chain-hash", "valueString": entry["hash"]}],
    }
    if entry.get("record"):
        event["entity"] = [{"what": {"identifier": {"system": "urn:medvault:record", "value": entry["record"]}}}]
    if entry["action"] == "break_glass":
        event["purposeOfEvent"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                                "code": "ETREAT", "display": "Emergency Treatment"}]}]
        reason = (entry.get("detail") or {}).get("reason")
        if reason:
            event["outcomeDesc"] = f"break-glass: {reason}"
    return event


def bundle(entries: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": audit_event(e)} for e in entries]}
