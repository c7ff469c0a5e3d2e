"""Is this JSON a valid FHIR R4 resource of a type we store? Checked with
fhir.resources' R4B models (pydantic; docs/DECISIONS.md says why R4B for an
R4 server), before anything is sealed or stored.

Only what R4 and R4B define alike is accepted (``STORABLE``): the resource
types new in R4B, the two whose R4B shape is not R4's (Evidence,
EvidenceVariable) and the types this server writes itself (AuditEvent,
Provenance, OperationOutcome, CapabilityStatement, Parameters) are refused.
A failure names each element at fault and the kind of fault, never the
value (which may be patient data).
"""
from __future__ import annotations

import json

from daemon.errors import BadRequest, NotFound

from ..params import check_depth
from .outcome import InvalidResource

# The resource types of R4 (4.0.1) that R4B defines the same way.
STORABLE = frozenset("""
Account ActivityDefinition AdverseEvent AllergyIntolerance Appointment AppointmentResponse Basic Binary
BiologicallyDerivedProduct BodyStructure Bundle CarePlan CareTeam CatalogEntry ChargeItem ChargeItemDefinition
Claim ClaimResponse ClinicalImpression CodeSystem Communication CommunicationRequest CompartmentDefinition
Composition ConceptMap Condition Consent Contract Coverage CoverageEligibilityRequest CoverageEligibilityResponse
DetectedIssue Device DeviceDefinition DeviceMetric DeviceRequest DeviceUseStatement DiagnosticReport
DocumentManifest DocumentReference Encounter Endpoint EnrollmentRequest EnrollmentResponse EpisodeOfCare
EventDefinition ExampleScenario ExplanationOfBenefit FamilyMemberHistory Flag Goal GraphDefinition Group
GuidanceResponse HealthcareService ImagingStudy Immunization ImmunizationEvaluation ImmunizationRecommendation
ImplementationGuide InsurancePlan Invoice Library Linkage List Location Measure MeasureReport Media Medication
MedicationAdministration MedicationDispense MedicationKnowledge MedicationRequest MedicationStatement
MessageDefinition MessageHeader MolecularSequence NamingSystem NutritionOrder Observation ObservationDefinition
OperationDefinition Organization OrganizationAffiliation Patient PaymentNotice PaymentReconciliation Person
PlanDefinition Practitioner PractitionerRole Procedure Questionnaire QuestionnaireResponse RelatedPerson
RequestGroup ResearchDefinition ResearchElementDefinition ResearchStudy ResearchSubject RiskAssessment Schedule
SearchParameter ServiceRequest Slot Specimen SpecimenDefinition StructureDefinition StructureMap Subscription
Substance SupplyDelivery SupplyRequest Task TerminologyCapabilities TestReport TestScript ValueSet
VerificationResult VisionPrescription
""".split())
# Served, not stored: read through the audit chain and the version history.
DERIVED = frozenset({"AuditEvent", "Provenance"})
MAX_ISSUES = 20
MAX_DEPTH = 64  # a Bundle of resources nests about 20 deep


def check_type(name: str) -> str:
    """A resource type in a URL: one this server serves, else 404."""
    if name not in STORABLE and name not in DERIVED:
        raise NotFound("this server serves no such resource type", "unknown_resource_type")
    return name


def parse_json(body: bytes) -> dict:
    """Request bytes → a JSON object (400 when not JSON at all, or nested
    deeper than any R4 resource: what walks it later recurses too)."""
    try:
        text = body.decode("utf-8")
        check_depth(text, MAX_DEPTH)
        value = json.loads(text)
    except (ValueError, RecursionError):  # bad UTF-8 or JSON, huge numbers, deep nesting
        raise BadRequest("the body is not valid JSON (or nests too deeply)", "bad_json") from None
    if not isinstance(value, dict):
        raise InvalidResource("a FHIR resource is a JSON object", [_issue("", "invalid", "not a JSON object")])
    return value


def _issue(path: str, kind: str, text: str) -> dict:
    issue = {"severity": "error", "code": "structure" if kind != "required" else "required",
             "details": {"coding": [{"system": "urn:medvault:validation", "code": kind}], "text": text},
             "diagnostics": text}
    if path:
        issue["expression"] = [path]
    return issue


def _path(resource_type: str, loc: tuple) -> str:
    """pydantic's error location as FHIRPath: ``Observation.code.coding[0].system``."""
    out = resource_type
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith("function-") and "[" not in str(part):
            out += f".{part}"
    return out


def validate(resource: dict) -> str:
    """422 with an issue per element at fault, unless ``resource`` is a valid
    R4 resource of a storable type; returns its type. (CPU work: callers run
    it off the event loop for big bodies.)"""
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or rtype not in STORABLE:
        raise InvalidResource("resourceType names no resource type this server stores",
                              [_issue("resourceType", "unknown_type", "not a storable R4 resource type")])
    # Heavy (pydantic and the models, ~5 MB resident): imported on the first /fhir write, not by every daemon.
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError
    try:
        get_fhir_model_class(rtype).model_validate(resource)
    except ValidationError as error:
        issues = [_issue(_path(rtype, e["loc"]), e["type"], f"{_path(rtype, e['loc'])}: {e['type']}")
                  for e in error.errors()[:MAX_ISSUES]]
        raise InvalidResource(f"the {rtype} is not a valid R4 resource", issues) from None
    except (ValueError, TypeError, RecursionError):  # a validator's own error on odd input
        raise InvalidResource(f"the {rtype} is not a valid R4 resource",
                              [_issue(rtype, "invalid", "the resource could not be validated")]) from None
    return rtype
