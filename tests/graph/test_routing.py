"""What plain words give a process's inputs without a model, and what a model gives."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.app import Steward
from bot.settings import load_settings
from graph.catalog import Catalog
from graph.routing import NotRouted, Route, extract_values
from processes import BUILTIN_DIR
from tests.fakes.openai_api import fake_openai

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
        ("onboard Acme Corp on the basic package", {"contact": None, "client": "Acme Corp"}),
        ("onboard the client I met at Acme", {"contact": None, "client": "Acme"}),
        ("Onboard from Acme", {"contact": None, "client": "Acme"}),
        ("onboard Jane from Acme and Sam from Globex", {"contact": None, "client": None}),
        ("Please onboard INV-7 from Acme", {"contact": None}),  # no name has a digit
        ("Welcome Dr Smith of Acme", {"contact": "Dr Smith", "client": None}),
        ("Onboard ACME from Germany", {"contact": None}),  # a company in capitals
        ("onboard Anne-Marie from Acme", {"contact": "Anne-Marie"}),
        (
            "onboard Acme Corp on the basic package with kickoff 2026-12-20 15:00",
            {"kickoff": "2026-12-20 15:00", "package": "basic"},
        ),
        ("onboard Globex, kick-off on 2026-12-20", {"kickoff": None}),  # no time: not midnight
        ("onboard Acme on premium with Jane as the contact", {"client": "Acme"}),
        ("onboard Acme for Monday", {"client": "Acme"}),
        ("onboard March from Acme", {"contact": None, "client": "Acme"}),
        ("onboard April Smith from Acme", {"contact": "April", "client": "Acme"}),
        ("onboard May from Globex on Monday", {"contact": None, "client": "Globex"}),
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
    later = extract_values(followup, "chase the overdue invoice for March from Globex")
    assert (later.get("contact"), later.get("client")) == (None, "Globex")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "chase Globex for invoice INV-7 of €2,500 due 2026-11-01 (ap@globex.com)",
            {"client": "Globex", "invoice": "INV-7", "amount": "€2,500.00"},
        ),
        ("Chase Globex about invoice #1042", {"client": "Globex", "invoice": "1042"}),
        ("remind Globex of invoice no. 88, 1,200 EUR", {"invoice": "88", "amount": "€1,200.00"}),
        ("remind Globex of invoice 88, 2500 pounds", {"invoice": "88", "amount": "£2,500.00"}),
        ("chase Globex for invoice 88: £2,500", {"invoice": "88", "amount": "£2,500.00"}),
        ("chase the Globex invoice 1,200 EUR", {"client": "Globex", "invoice": None}),
        ("chase the Globex invoice 1200 €", {"invoice": None, "amount": "€1,200.00"}),
        ("chase Globex for invoice 1042 €2,500", {"invoice": "1042", "amount": "€2,500.00"}),
        ("chase Acme Ltd. about invoice 2026-11-01", {"client": "Acme Ltd.", "invoice": None}),
        ("chase Globex for invoice 12 and invoice 13", {"invoice": None}),  # which?
        ("please chase INV-7", {"client": None}),  # no name has a digit
    ],
)
def test_a_reminder_reads_the_client_it_chases_and_the_invoice_number(
    text: str, expected: dict[str, Any]
) -> None:
    """ "chase Globex for invoice INV-7 of €2,500 …" asked which client and which invoice:
    only a company after "from", "for" or "at" was read, and no invoice number at all."""
    followup = Catalog.load(BUILTIN_DIR).get("invoice_followup")
    assert followup is not None
    found = extract_values(followup, text)
    assert {name: found.get(name) for name in expected} == expected


@pytest.mark.parametrize(
    "text",
    ["write the newsletter on topic 5 tips for winter", "newsletter to audience 2026 list"],
)
def test_only_an_input_its_definition_calls_a_number_is_read_after_its_name(text: str) -> None:
    """What followed an input's name and held a digit was read for any text input: the
    newsletter's topic became "5"."""
    newsletter = Catalog.load(BUILTIN_DIR).get("newsletter_issue")
    assert newsletter is not None
    assert extract_values(newsletter, text) == {}


def test_a_sentence_s_full_stop_is_not_part_of_the_company() -> None:
    """ "onboard Jane from Acme." welcomed "Acme." aboard."""
    assert ONBOARDING is not None
    assert extract_values(ONBOARDING, "onboard Jane from Acme.")["client"] == "Acme"
    assert extract_values(ONBOARDING, "onboard Jane from Acme S.A.")["client"] == "Acme S.A."


async def routed_by_a_model(
    tmp_path: Path, process: str, given: dict[str, str], text: str, now: datetime | None = None
) -> Route | None:
    """What tier 2 makes of ``text`` when the model picks ``process`` with ``given``."""
    async with fake_openai() as server:
        inputs = [{"name": name, "value": value} for name, value in given.items()]
        answer = {"process": process, "inputs": inputs, "confidence": 0.9}
        server.answers.append(json.dumps(answer))
        settings = load_settings(
            home=tmp_path / "home",
            llm_model="gpt-4o-mini",
            openai_base_url=server.url,
            openai_api_key="sk-test",
        )
        async with Steward.open(settings) as app:
            return await app.coordinator.router.by_model(text, now)


async def test_a_model_behind_openais_api_routes_and_reads_inputs(tmp_path: Path) -> None:
    """The answer's schema is one OpenAI takes in strict mode: an object whose keys it
    does not name (inputs by name) was refused, with a 400, for every request."""
    given = {"client": "Globex", "email": "ops@globex"}
    text = "greet Globex, they bought our top tier"
    route = await routed_by_a_model(tmp_path, "onboarding", given, text)
    assert route is not None and route.process.name == "onboarding"
    assert route.values == {"client": "Globex"}  # "ops@globex" is no email: dropped
    assert route.tier == 2


async def test_a_model_s_input_that_has_passed_on_the_clock_is_told(tmp_path: Path) -> None:
    """A kick-off the operator gave, which the model read and the clock refuses, is
    told (and asked for again), not dropped as a guess; one they did not give is dropped."""
    given = {"client": "Globex", "kickoff": "2030-05-20 10:00", "email": "ops@globex.com"}
    text = "greet Globex, they bought our top tier; kick-off 2030-05-20 10:00"
    now = datetime(2030, 6, 1, 9, 0, tzinfo=UTC)
    route = await routed_by_a_model(tmp_path, "onboarding", given, text, now)
    assert route is not None and route.values == {"client": "Globex"}
    assert route.refused == {
        "kickoff": "kickoff: that has passed (it is 2030-06-01 09:00 now), got '2030-05-20 10:00'"
    }


async def test_a_model_s_route_against_its_words_starts_nothing(tmp_path: Path) -> None:
    """The rules let "cancel the Acme onboarding" through to the model, which picked
    onboarding, and a form opened."""
    text = "cancel the Acme onboarding"
    assert await routed_by_a_model(tmp_path, "onboarding", {"client": "Acme"}, text) is None


async def test_a_model_s_route_keeps_only_the_inputs_the_operator_gave(tmp_path: Path) -> None:
    """The model's inputs were kept whatever they were: asked to chase Globex, it wrote
    an address, an amount and a date of its own, and the run started with them, its
    card ready to send a reminder to an address nobody gave."""
    given = {
        "client": "Globex",
        "invoice": "inv-42",
        "amount": "1200",
        "email": "accounts@globex.com",
        "due_date": "2026-10-01",
    }
    text = "get the money Globex owes us on INV-42 ($1,200) back"
    route = await routed_by_a_model(tmp_path, "invoice_followup", given, text)
    assert route is not None and route.process.name == "invoice_followup"
    assert set(route.values) == {"client", "invoice", "amount"}  # the rest is asked


@pytest.mark.parametrize(
    ("text", "given", "kept"),
    [
        ("chase Globex for $2,500 on INV-7", "2500.00", "$2,500.00"),
        ("chase Globex for 2500 EUR on INV-7", "2,500", "€2,500.00"),
        ("chase Globex for 2500EUR on INV-7", "$2500", "€2,500.00"),  # as they wrote it
        ("chase Globex for 2,500 on INV-7", "2500", "2,500.00"),
        ("chase Globex for $12,000 on INV-7", "1200", None),  # its words hold no 1200
        ("chase Globex for $2,500 on INV-7", "7", None),  # a part of the invoice number
        ("chase Globex for $2,500, due 2026-11-01", "11", None),  # a part of a date
    ],
)
async def test_a_model_s_amount_is_kept_when_it_is_one_the_operator_gave(
    tmp_path: Path, text: str, given: str, kept: str | None
) -> None:
    """An amount was kept only when its very characters were in the operator's words:
    "2500.00" for their "$2,500" was dropped and asked for again, and "1200" was kept
    for their "$12,000"."""
    route = await routed_by_a_model(tmp_path, "invoice_followup", {"amount": given}, text)
    assert route is not None
    assert route.values.get("amount") == kept


@pytest.mark.parametrize(
    ("setting", "fix"),
    [
        ("OPENAI_BASE_URL", "could not reach http://127.0.0.1:9/v1: check OPENAI_BASE_URL"),
        ("a secret in it", "could not reach http://127.0.0.1:9/v1: check OPENAI_BASE_URL"),
        ("OPENAI_API_KEY", "refused the key: check OPENAI_API_KEY"),
        ("STEWARD_LLM_FAST_MODEL", "has no model gpt-4o-mni: check STEWARD_LLM_FAST_MODEL"),
        ("base path", "has no model gpt-4o-mini: check STEWARD_LLM_MODEL and OPENAI_BASE_URL"),
    ],
)
async def test_a_model_set_up_wrong_says_which_setting_to_fix(
    tmp_path: Path, setting: str, fix: str
) -> None:
    """The operator read "it failed: Connection error." or "Error code: 404 - 404: Not
    Found", and could not tell which of four settings was wrong."""
    async with fake_openai() as server:
        server.key, server.models = "sk-right", ["gpt-4o", "gpt-4o-mini"]
        given = {
            "home": tmp_path / "home",
            "llm_model": "gpt-4o-mini",
            "openai_base_url": server.url,
            "openai_api_key": "sk-right",
        }
        match setting:
            case "OPENAI_BASE_URL":
                given["openai_base_url"] = "http://127.0.0.1:9/v1"  # nothing listens
            case "a secret in it":  # the error is said in chat
                given["openai_base_url"] = "http://me:pw@127.0.0.1:9/v1?api-key=k"
            case "OPENAI_API_KEY":
                given["openai_api_key"] = "sk-wrong"
            case "STEWARD_LLM_FAST_MODEL":
                given |= {"llm_model": "gpt-4o", "llm_fast_model": "gpt-4o-mni"}
            case "base path":
                given["openai_base_url"] = server.url.removesuffix("/v1")
        async with Steward.open(load_settings(**given)) as app:
            with pytest.raises(NotRouted) as refused:
                await app.coordinator.router.by_model("greet Globex, they bought our top tier")
    assert fix in str(refused.value)


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("chase Acme for $1,200, due 2026-11-01", "$1,200.00"),
        ("chase Acme for 1,200.50 EUR", "€1,200.50"),
        ("chase Acme for $1200.", "$1,200.00"),
        ("chase Acme for $1200.555", None),  # not 1200.55: asked for instead
        ("chase Acme for €1.200,50", "€1,200.50"),  # not 1.20
        ("chase Acme for 1.200,50 EUR", "€1,200.50"),  # not 200,50
        ("chase Acme for EUR 2.500,00, due 2026-11-01", "€2,500.00"),
        ("chase Acme for 2 500 €", None),  # "2" and "500 €": asked for instead
        ("chase Acme for €2 500", None),  # not €2: asked for instead
        ("chase Acme for EUR 2\u00a0500 by Friday", None),
        ("chase Acme for $1 200.50", None),
        ("chase Acme for €2,500 3 weeks late", "€2,500.00"),
        ("chase Acme for 2500 € by Friday", "€2,500.00"),
        ("chase Acme for €1.200", None),  # 1,200 or 1.20: asked for instead
        ("chase Acme for $1.200.50", None),
        ("chase Acme for invoice 1042 €2,500", "€2,500.00"),  # not €1,042
        ("chase Acme for invoice INV-7 $500", "$500.00"),  # not $7
        ("chase Acme, due 2026-11-01 €500", "€500.00"),  # not €1
        ("chase Acme for invoice 1042 EUR 2500", "€2,500.00"),  # not €1,042
        ("chase Acme for 报价2500€", "€2,500.00"),  # after a letter written without spaces
    ],
)
def test_an_amount_is_read_whole_or_not_at_all(text: str, amount: str | None) -> None:
    followup = Catalog.load(BUILTIN_DIR).get("invoice_followup")
    assert followup is not None
    assert extract_values(followup, text).get("amount") == amount


@pytest.mark.parametrize(
    ("text", "client"),
    [
        ("chase Acme for EUR 2.500,00", "Acme"),  # not EUR
        ("chase Acme for USD 400", "Acme"),
        ("chase Euro Cars for €400", "Euro Cars"),
    ],
)
def test_a_currency_is_no_client(text: str, client: str) -> None:
    followup = Catalog.load(BUILTIN_DIR).get("invoice_followup")
    assert followup is not None
    assert extract_values(followup, text).get("client") == client
