"""FHIR R4 REST at ``/fhir`` over the same Vault as ``/v1`` (issue 11).

One job per module: ``routes`` (HTTP handlers), ``outcome`` (OperationOutcome
and content negotiation), ``validation`` (R4 models), ``resources`` (read,
vread, create, update, delete over Records), ``search`` + ``query`` (FHIR
parameters onto the one search), ``bundles`` (Bundle builders),
``transaction`` (batch and transaction), ``history`` (``_history`` and
Provenance), ``consent`` (Consent ↔ grants), ``audit`` (AuditEvent search),
``capability`` (the CapabilityStatement).
"""
