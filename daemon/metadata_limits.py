"""The metadata schema's size limits (daemon.metadata enforces them on
read). A module of its own, importing nothing: the FHIR parse worker holds
its summaries to them without loading the CID and dag-cbor stack."""
from __future__ import annotations

MAX_VERSION = 2**31 - 1
MAX_SIZE = 2**53  # exact in every JSON number implementation
# size >= 1: chunks are never empty, and an imported empty record made content reads fail (500)
MAX_CONTENT_TYPE = 255
MAX_TITLE = 500
MAX_TAGS = 32
MAX_TAG = 64
MAX_SUBJECT = 200
MAX_CODES = 1000
MAX_SYSTEM = 200
MAX_CODE = 100
MAX_TEXT = 4000
MAX_DATE = 40
MAX_IDENTIFIERS = 100
MAX_IDENTIFIER = 100
