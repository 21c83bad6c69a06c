"""What plain words give a process's inputs without a model."""

from __future__ import annotations

from typing import Any

import pytest

from graph.catalog import Catalog
from graph.routing import extract_values
from processes import BUILTIN_DIR

ONBOARDING = Catalog.load(BUILTIN_DIR).get("onboarding")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "onboard Jane from Acme Corp (jane@acme.com) on the premium package",
            {"contact": "Jane", "client": "Acme Corp", "email": "jane@acme.com"},
        ),
        ("Onboard Jane Doe from Acme", {"contact": "Jane", "client": "Acme"}),
        ("Kick off Olu at Bramble Books", {"contact": "Olu", "client": "Bramble Books"}),
        ("welcome Émile from Lumen Yoga", {"contact": "Émile", "client": "Lumen Yoga"}),
        ("onboard Acme Corp on the basic package", {"contact": None, "client": None}),
        ("onboard the client I met at Acme", {"contact": None, "client": "Acme"}),
        ("Onboard from Acme", {"contact": None, "client": "Acme"}),
        ("onboard Jane from Acme and Sam from Globex", {"contact": None, "client": None}),
        ("Please onboard INV-7 from Acme", {"contact": None}),  # no name has a digit
        ("Welcome Dr Smith of Acme", {"contact": "Dr Smith"}),
        ("Onboard ACME from Germany", {"contact": None}),  # a company in capitals
        ("onboard Anne-Marie from Acme", {"contact": "Anne-Marie"}),
        (
            "onboard Acme Corp on the basic package with kickoff 2026-12-20 15:00",
            {"kickoff": "2026-12-20T15:00", "package": "basic"},
        ),
        ("onboard Globex, kick-off on 2026-12-20", {"kickoff": None}),  # no time: not midnight
    ],
)
def test_the_person_named_before_the_company_is_the_one_greeted(
    text: str, expected: dict[str, Any]
) -> None:
    assert ONBOARDING is not None
    found = extract_values(ONBOARDING, text)
    assert {name: found.get(name) for name in expected} == expected


def test_a_reminder_greets_the_person_named_before_the_company() -> None:
    followup = Catalog.load(BUILTIN_DIR).get("invoice_followup")
    assert followup is not None
    text = "chase Tom from Globex about invoice INV-42, $1,200 due 2026-11-01 (tom@globex.io)"
    found = extract_values(followup, text)
    assert (found.get("contact"), found.get("client")) == ("Tom", "Globex")
