"""Typed process inputs: ``parse_input`` turns what an operator typed into a value or an InputError.

Every ``InputType`` is tried with values it must accept (and what they become) and values it
must refuse; a refusal names the field and says what was expected.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from graph.inputs import InputError, InputSpec, InputType, parse_input

CHOICES = ["basic", "standard", "premium"]


def spec(kind: InputType, **extra: Any) -> InputSpec:
    if kind is InputType.CHOICE:
        extra.setdefault("choices", CHOICES)
    return InputSpec(type=kind, **extra)


GOOD: list[tuple[InputType, Any, Any]] = [
    (InputType.STRING, "Acme Ltd", "Acme Ltd"),
    (InputType.STRING, "  padded  ", "padded"),
    (InputType.TEXT, "line one\nline two", "line one\nline two"),
    (InputType.EMAIL, "jane@example.com", "jane@example.com"),
    (InputType.EMAIL, " Jane.Doe@Example.COM ", "jane.doe@example.com"),
    (InputType.INTEGER, "42", 42),
    (InputType.INTEGER, "1,200", 1200),
    (InputType.INTEGER, "-3", -3),
    (InputType.INTEGER, 7, 7),
    (InputType.INTEGER, "-999999999999999999", -999_999_999_999_999_999),  # 18 digits
    (InputType.NUMBER, "1.5", 1.5),
    (InputType.NUMBER, "1,200.5", 1200.5),
    (InputType.NUMBER, "-2", -2.0),
    (InputType.MONEY, "1200", "1,200.00"),  # no currency named: none is made up
    (InputType.MONEY, "1,200.5", "1,200.50"),
    (InputType.MONEY, "$40", "$40.00"),
    (InputType.MONEY, "0.99", "0.99"),
    (InputType.MONEY, "€15.5", "€15.50"),
    (InputType.MONEY, "$ 1,234,567.89", "$1,234,567.89"),
    (InputType.MONEY, "2500 EUR", "€2,500.00"),  # as plain words are read
    (InputType.MONEY, "2,500.50 dollars", "$2,500.50"),
    (InputType.MONEY, "£300 GBP", "£300.00"),
    (InputType.MONEY, "2500 pounds", "£2,500.00"),
    (InputType.MONEY, "1 pound", "£1.00"),
    (InputType.MONEY, "300 Sterling", "£300.00"),
    (InputType.MONEY, "€2,500.00", "€2,500.00"),  # as a run keeps it: read again the same
    (InputType.MONEY, "EUR 1200", "€1,200.00"),  # a code before it, as invoices print it
    (InputType.MONEY, "usd40", "$40.00"),
    (InputType.MONEY, "12,50", "12.50"),  # a decimal comma: never 1250.00
    (InputType.MONEY, "12,50 EUR", "€12.50"),
    (InputType.MONEY, "€1.200,50", "€1,200.50"),
    (InputType.MONEY, "1.200,50 €", "€1,200.50"),  # the sign after it
    (InputType.MONEY, "1.200.000", "1,200,000.00"),  # points between thousands, no doubt
    (InputType.MONEY, "1 200,5 €", "€1,200.50"),
    (InputType.MONEY, "1\u202f200,50", "1,200.50"),  # French, a narrow space between
    (InputType.MONEY, "1'200.50", "1,200.50"),  # Swiss
    (InputType.MONEY, "1,2", "1.20"),
    (InputType.DATE, "2026-03-01", "2026-03-01"),
    (InputType.DATETIME, "2026-03-01 15:30", "2026-03-01 15:30"),
    (InputType.DATETIME, "2026-03-01T09:05", "2026-03-01 09:05"),
    (InputType.BOOLEAN, "yes", True),
    (InputType.BOOLEAN, "no", False),
    (InputType.BOOLEAN, "true", True),
    (InputType.BOOLEAN, "false", False),
    (InputType.BOOLEAN, "YES", True),
    (InputType.BOOLEAN, True, True),
    (InputType.CHOICE, "premium", "premium"),
    (InputType.CHOICE, "Premium", "premium"),
    (InputType.CHOICE, " STANDARD ", "standard"),
    (InputType.URL, "https://example.com/invoice/7?x=1", "https://example.com/invoice/7?x=1"),
    (InputType.URL, "http://example.com", "http://example.com"),
]

BAD: list[tuple[InputType, Any]] = [
    (InputType.STRING, ""),
    (InputType.STRING, "   "),
    (InputType.TEXT, ""),
    (InputType.EMAIL, "jane@"),
    (InputType.EMAIL, "jane"),
    (InputType.EMAIL, "jane@example"),
    (InputType.EMAIL, "jane doe@example.com"),
    (InputType.INTEGER, "1.5"),
    (InputType.INTEGER, "twelve"),
    (InputType.INTEGER, True),
    (InputType.INTEGER, "1000000000000000000"),  # 19 digits: past what a run keeps
    (InputType.INTEGER, "99999999999999999999999"),
    (InputType.NUMBER, "one"),
    (InputType.NUMBER, "1.2.3"),
    (InputType.MONEY, "-5"),
    (InputType.MONEY, "1.234"),
    (InputType.MONEY, "lots"),
    (InputType.MONEY, "NaN"),
    (InputType.MONEY, "€1.200"),  # 1,200 to some, 1.20 to others
    (InputType.MONEY, "2.500 €"),
    (InputType.MONEY, "1,200,50"),
    (InputType.MONEY, "0,500"),  # half of one, in three decimals: never 500
    (InputType.MONEY, "0 500 €"),
    (InputType.MONEY, "0.200.000"),
    (InputType.MONEY, "1.200.50"),
    (InputType.MONEY, "1,20.5"),
    (InputType.MONEY, "1e3"),
    (InputType.MONEY, "euro1200"),
    (InputType.MONEY, "1" * 27),  # past the 28 digits a Decimal holds, with its cents
    (InputType.MONEY, "$2,500 EUR"),  # which currency is owed?
    (InputType.INTEGER, "12,50"),
    (InputType.NUMBER, "2,5"),
    (InputType.DATE, "March 1"),
    (InputType.DATE, "2026-02-30"),
    (InputType.DATE, "01/03/2026"),
    (InputType.DATETIME, "tomorrow at 3"),
    (InputType.DATETIME, "2026-03-01 15:30+02:00"),  # a local time: no offset
    (InputType.DATETIME, "2026-03-01"),  # a date alone: not taken as midnight
    (InputType.BOOLEAN, "maybe"),
    (InputType.CHOICE, "gold"),
    (InputType.CHOICE, "prem"),
    (InputType.URL, "example.com"),
    (InputType.URL, "ftp://example.com"),
    (InputType.URL, "https://"),
]


def _id(case: tuple[Any, ...]) -> str:
    return f"{case[0].value}-{case[1]!r}"


def test_cases_cover_every_input_type() -> None:
    assert {c[0] for c in GOOD} == set(InputType)
    assert {c[0] for c in BAD} == set(InputType)


@pytest.mark.parametrize(("kind", "raw", "expected"), GOOD, ids=[_id(c) for c in GOOD])
def test_parse_accepts(kind: InputType, raw: Any, expected: Any) -> None:
    value = parse_input("field", spec(kind), raw)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(("kind", "raw"), BAD, ids=[_id(c) for c in BAD])
def test_parse_rejects(kind: InputType, raw: Any) -> None:
    given = spec(kind)
    with pytest.raises(InputError) as caught:
        parse_input("field", given, raw)
    assert caught.value.field == "field"
    assert caught.value.spec is given
    assert str(caught.value).startswith(f"field: expected {given.expected()}")


@pytest.mark.parametrize(
    ("kind", "raw", "words"),
    [
        (InputType.EMAIL, "jane@", "expected an email address"),
        # each a list or more than one bare address: SMTP carried the first part alone
        (InputType.EMAIL, "billing,jane@acme.com", "expected an email address"),
        (InputType.EMAIL, "x@evil.com,jane@acme.com", "expected an email address"),
        (InputType.EMAIL, "Jane <jane@acme.com>", "expected an email address"),
        (InputType.EMAIL, "a@b.com(c)", "expected an email address"),
        (InputType.EMAIL, "jöns@acme.de", "expected an email address"),  # no SMTPUTF8
        (InputType.INTEGER, "1.5", "expected a whole number"),
        (InputType.NUMBER, "???", "expected a number"),
        (InputType.MONEY, "-5", "expected an amount"),
        (InputType.DATE, "March 1", "expected a date as YYYY-MM-DD"),
        (InputType.BOOLEAN, "maybe", "expected yes or no"),
        (InputType.CHOICE, "gold", "expected one of basic, standard, premium"),
        (InputType.URL, "example.com", "expected a web address"),
        (InputType.STRING, "", "expected text (up to 2000 characters)"),
    ],
)
def test_error_names_the_field_and_what_was_expected(kind: InputType, raw: str, words: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_input("contact", spec(kind), raw)
    message = str(caught.value)
    assert message.startswith("contact: ")
    assert words in message
    assert message.endswith(f"got {raw!r}")


def test_string_over_max_length_is_rejected() -> None:
    short = spec(InputType.STRING, max_length=5)
    assert parse_input("code", short, "abcde") == "abcde"
    with pytest.raises(InputError, match="up to 5 characters"):
        parse_input("code", short, "abcdef")


def test_text_over_max_length_is_rejected() -> None:
    with pytest.raises(InputError):
        parse_input("notes", spec(InputType.TEXT), "x" * 2001)


def test_long_values_are_shortened_in_the_message() -> None:
    with pytest.raises(InputError) as caught:
        parse_input("email", spec(InputType.EMAIL), "not-an-email-" * 10)
    message = str(caught.value)
    assert "..." in message
    assert len(message) < 120


def test_input_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_input("email", spec(InputType.EMAIL), "jane@")


def test_choice_spec_needs_choices() -> None:
    with pytest.raises(ValidationError, match="needs a list of choices"):
        InputSpec(type=InputType.CHOICE)
    with pytest.raises(ValidationError, match="only for inputs of type choice"):
        InputSpec(type=InputType.STRING, choices=["a"])


BERLIN_NOON = datetime(2026, 3, 29, 12, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # summer time


@pytest.mark.parametrize(
    ("kind", "raw", "taken"),
    [
        (InputType.DATETIME, "2026-03-29 12:01", True),
        (InputType.DATETIME, "2026-03-29 12:00", False),  # now is no time still to come
        (InputType.DATETIME, "2026-03-29 11:30", False),  # UTC's 11:30 is still to come
        (InputType.DATE, "2026-03-29", True),  # today
        (InputType.DATE, "2026-03-28", False),
    ],
)
def test_a_future_input_is_read_on_the_operators_clock(
    kind: InputType, raw: str, taken: bool
) -> None:
    future = spec(kind, future=True)
    if taken:
        assert parse_input("kickoff", future, raw, BERLIN_NOON) == parse_input("k", future, raw)
    else:
        with pytest.raises(InputError, match="kickoff: that has passed"):
            parse_input("kickoff", future, raw, BERLIN_NOON)
    assert parse_input("kickoff", spec(kind), raw, BERLIN_NOON)  # not future: any time


@pytest.mark.parametrize("future", [True, False])
def test_a_local_time_the_clocks_skip_is_refused(future: bool) -> None:
    kickoff = spec(InputType.DATETIME, future=future)
    with pytest.raises(
        InputError, match="kickoff: no such time in Europe/Berlin: the clocks skip it"
    ):
        parse_input("kickoff", kickoff, "2027-03-28 02:30", BERLIN_NOON)
    assert parse_input("kickoff", kickoff, "2027-03-28 03:30", BERLIN_NOON)
    assert parse_input("kickoff", kickoff, "2027-10-31 02:30", BERLIN_NOON)  # twice: the first
    assert parse_input("kickoff", kickoff, "2027-03-28 02:30")  # on no clock: not checked


def test_only_a_date_or_datetime_may_be_future() -> None:
    with pytest.raises(ValidationError, match="only for inputs of type date or datetime"):
        InputSpec(type=InputType.STRING, future=True)


def test_spec_defaults_to_a_required_string() -> None:
    default = InputSpec()
    assert default.type is InputType.STRING
    assert default.required is True
    assert default.max_length == 2000


@pytest.mark.parametrize("raw", ["Infinity", "inf"])
def test_money_infinity_is_an_input_error(raw: str) -> None:
    with pytest.raises(InputError):
        parse_input("amount", spec(InputType.MONEY), raw)


@pytest.mark.parametrize("raw", ["nan", "inf", "-Infinity"])
def test_number_rejects_non_finite(raw: str) -> None:
    with pytest.raises(InputError):
        parse_input("ratio", spec(InputType.NUMBER), raw)


@pytest.mark.parametrize("kind", list(InputType))
def test_no_input_holds_control_characters(kind: InputType) -> None:
    given = spec(kind)
    for raw in ("Evil\x1b[2J\x1b[31mCo", "a\x07b", "paid\u202egnp.exe", "x\u202dy", "x\x9by"):
        with pytest.raises(InputError, match="control characters are not allowed"):
            parse_input("client", given, raw)


@pytest.mark.parametrize("kind", [k for k in InputType if k is not InputType.TEXT])
def test_only_a_text_input_holds_line_breaks(kind: InputType) -> None:
    given = spec(kind)
    for raw in ("Acme\nBcc: victim@example.com", "a\rb", "a\u2028b"):
        with pytest.raises(InputError, match="one line is expected"):
            parse_input("client", given, raw)
    assert parse_input("notes", spec(InputType.TEXT), "Dear Jane,\n\n\tthanks") == (
        "Dear Jane,\n\n\tthanks"
    )


def test_right_to_left_text_with_its_embeddings_and_isolates_is_taken() -> None:
    hebrew = "\u05e9\u05dc\u05d5\u05dd"  # shalom
    for raw in (f"\u202b{hebrew}\u202c", f"Meeting with \u2068{hebrew}\u2069 at 10", "مرحبا 👩‍💻"):
        assert parse_input("client", spec(InputType.STRING), raw) == raw
    assert parse_input("notes", spec(InputType.TEXT), "Dear Jane,\r\nthanks") == (
        "Dear Jane,\r\nthanks"
    )


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        ("1.200", "1.200 is 1,200 to some and 1.20 to others: write 1200 or 1,20"),
        ("€12.500", "12.500 is 12,500 to some and 12.50 to others: write 12500 or 12,50"),
        ("1.234 EUR", "1.234 is 1,234 to some and 1.234 to others: write 1234"),
        # its whole as written without the point: "write 0500", "write 0001", were odd
        ("0.500", "0.500 is 500 to some and 0.50 to others: write 500 or 0,50"),
        ("0.001", "0.001 is 1 to some and 0.001 to others: write 1"),
    ],
)
def test_an_amount_of_thousands_or_cents_says_which_to_write(raw: str, said: str) -> None:
    """ "1.200" was refused as "expected an amount like 1200, 1,200.50, 1.200,50 or
    €1,200", which names a point between thousands as read: not why this one is not."""
    with pytest.raises(InputError) as refused:
        parse_input("amount", InputSpec(type=InputType.MONEY), raw)
    expected = InputSpec(type=InputType.MONEY).expected()
    assert str(refused.value) == f"amount: expected {expected}; {said}, got {raw!r}"
