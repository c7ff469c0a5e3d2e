"""The CLI's pure parts: media types guessed from file names."""
from __future__ import annotations

import pytest

from daemon.cli import guess_media_type


@pytest.mark.parametrize("name,expected", [
    ("obs.fhir.json", "application/fhir+json"), ("/tmp/DIR.json/X.FHIR.JSON", "application/fhir+json"),
    ("bundle.fhir.xml", "application/fhir+xml"), ("notes.json", "application/json"), ("scan.pdf", "application/pdf"),
    ("fhir.json", "application/json"), ("no-extension", "application/octet-stream")])
def test_guess_media_type(name, expected):
    assert guess_media_type(name) == expected
