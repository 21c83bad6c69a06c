"""Typed process inputs: what an operator typed, parsed to a value or explained as expected."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.base import ADDRESS
from graph.templating import render

EMAIL = re.compile(ADDRESS)  # one bare address, as the email connector sends to
URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)
# Characters no input may hold: C0 and C1 controls (a terminal's escape codes among them)
# but tab and line breaks, and the two bidirectional overrides, which show text reversed
# (the embeddings and isolates right-to-left text carries are fine). NUL, which no
# database stores, is replaced where text is stored: see storable.
CONTROL = re.compile(r"[\x01-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u202d\u202e]")
LINE_BREAK = re.compile(r"[\n\r\x0b\x0c\x85\u2028\u2029]")  # only a text input may hold one
LARGEST_WHOLE = 10**18  # an integer input stays below it: a run's checkpoint keeps 64 bits
TIME_OF_DAY = re.compile(r"\d[T ]\d{1,2}:\d{2}")  # "2026-12-20 15:00", "2026-12-20T15:00"
# A number's commas stand between its thousands ("1,200.50"): "12,50", twelve and a half
# where a comma is the decimal point, is refused, never read as 1250.
GROUPED = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?")
# The currencies an amount may be written with, as plain words are read ("$2,500",
# "2500 EUR", "2500 pounds"), by their codes: each is kept with its amount, and shown by
# its sign.
SIGNS = {"EUR": "€", "USD": "$", "GBP": "£"}
WORDS = {"eur": "EUR", "euro": "EUR", "euros": "EUR", "usd": "USD", "dollar": "USD"}
WORDS |= {"dollars": "USD", "gbp": "GBP", "pound": "GBP", "pounds": "GBP", "sterling": "GBP"}
BY_SIGN = {sign: code for code, sign in SIGNS.items()}
CURRENCY_SIGNS = "[" + "".join(map(re.escape, BY_SIGN)) + "]"
CURRENCY_WORDS = "|".join(map(re.escape, sorted(WORDS, key=len, reverse=True)))
CURRENCY_CODES = "|".join(SIGNS)
SIGNED = re.compile(rf"^({CURRENCY_SIGNS}|(?:{CURRENCY_CODES})(?![a-z]))\s*", re.IGNORECASE)
WORDED = re.compile(rf"\s*((?<![a-z])(?:{CURRENCY_WORDS})|{CURRENCY_SIGNS})$", re.IGNORECASE)
# An amount's figures as people write them: "1200", "1,200.50", "1 200.50", or, where a
# comma is the decimal point, "1200,50", "1.200,50" and "1.200.000"; at most cents.
# "1.200" alone, a thousand and two hundred to some and one point two to others, is
# refused, as is "1.234".
GAP = "[ \u00a0\u202f']"  # spaces and the Swiss apostrophe between thousands
# No thousands follow a 0: "0,500" is half of one written with three decimals, not 500.
THOUSANDS = r"[1-9]\d{0,2}"
POINT_DECIMAL = re.compile(rf"(?:\d+|{THOUSANDS}(,|{GAP})\d{{3}}(?:\1\d{{3}})*)(?:\.\d{{0,2}})?")
COMMA_DECIMAL = re.compile(
    rf"(?:\d+|{THOUSANDS}(\.|{GAP})\d{{3}}(?:\1\d{{3}})*),\d{{1,2}}|{THOUSANDS}(?:\.\d{{3}}){{2,}}"
)
# "1.200": a point between thousands to some, the decimal point to others.
POINT_OR_THOUSANDS = re.compile(r"\d{1,3}\.\d{3}")
TRUE = {"yes", "y", "true", "1", "on"}
FALSE = {"no", "n", "false", "0", "off"}


def currency_code(text: str) -> str | None:
    """The code of the currency ``text`` names by its sign, code or word ("€", "eur",
    "euros"); None when it names none steward writes."""
    named = text.strip()
    return BY_SIGN.get(named) or WORDS.get(named.lower())


class AmbiguousAmount(ValueError):
    """An amount whose one point may stand between thousands or before cents ("1.200":
    1,200 to some, 1.20 to others): steward asks rather than guess."""

    def __init__(self, figures: str) -> None:
        whole, point = str(int(figures.replace(".", ""))), Decimal(figures)  # 0.500: 500
        if point == point.quantize(Decimal("0.01")):
            cents = f"{point:.2f}"
            told = f"write {whole} or {cents.replace('.', ',')}"
            said = f"{figures} is {int(whole):,} to some and {cents} to others: {told}"
        else:
            said = f"{figures} is {int(whole):,} to some and {point} to others: write {whole}"
        super().__init__(said)


@dataclass(frozen=True)
class Money:
    """An amount and its currency's code (None when none was given), written as a
    client reads it, "€2,500.00" or "2,500.00": a run keeps a money input so."""

    amount: Decimal
    currency: str | None = None

    @classmethod
    def read(cls, text: str, currency: str | None = None) -> Money:
        """An amount as written ("€2,500", "2500 EUR", "EUR 1.200,50", "2 500 €",
        "2,500.00"; a bare number is how runs kept one before they kept its currency), in
        ``currency`` when it names none; raises ValueError."""
        sign, word = SIGNED.match(text), WORDED.search(text)
        named = {currency_code(m.group(1)) for m in (sign, word) if m is not None}
        if len(named) > 1:
            raise ValueError(f"{text!r} names two currencies")
        figures = text[sign.end() if sign else 0 : word.start() if word else len(text)]
        if POINT_DECIMAL.fullmatch(figures):
            number = re.sub(rf",|{GAP}", "", figures)
        elif COMMA_DECIMAL.fullmatch(figures):
            number = re.sub(rf"\.|{GAP}", "", figures).replace(",", ".")
        elif POINT_OR_THOUSANDS.fullmatch(figures):
            raise AmbiguousAmount(figures)
        else:
            raise ValueError(text)
        try:
            amount = Decimal(number).quantize(Decimal("0.01"))
        except InvalidOperation:  # past the 28 digits a Decimal holds
            raise ValueError(text) from None
        return cls(amount, named.pop() if named else currency)

    @classmethod
    def of_minor_units(cls, given: object) -> Money:
        """An amount given in hundredths, as a payment provider sends it (250000, or
        "250000", is 2,500.00), in no currency; raises ValueError for anything but a
        whole number of them."""
        text = str(given).strip() if isinstance(given, int | str) else ""
        if isinstance(given, bool) or not text.isascii() or not text.isdigit():
            raise ValueError(f"{given!r} is no whole number of minor units")
        try:
            return cls(Decimal(text).scaleb(-2).quantize(Decimal("0.01")))
        except InvalidOperation:  # past the 28 digits a Decimal holds
            raise ValueError(f"{given!r} is too large an amount") from None

    def __str__(self) -> str:
        return f"{SIGNS.get(self.currency or '', '')}{self.amount:,.2f}"


class InputType(StrEnum):
    STRING = "string"
    TEXT = "text"
    EMAIL = "email"
    INTEGER = "integer"
    NUMBER = "number"
    MONEY = "money"
    DATE = "date"
    DATETIME = "datetime"  # a local time of day on a date, in STEWARD_TIMEZONE
    BOOLEAN = "boolean"
    CHOICE = "choice"
    URL = "url"


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: InputType = InputType.STRING
    description: str = ""
    question: str | None = None
    required: bool = True
    default: Any = None
    choices: list[str] | None = None
    max_length: int = Field(default=2000, gt=0)
    future: bool = False  # a date or datetime: today or later, or a time still to come

    @model_validator(mode="after")
    def _choices_for_choice(self) -> InputSpec:
        if self.type is InputType.CHOICE and not self.choices:
            raise ValueError("a choice input needs a list of choices")
        if self.type is not InputType.CHOICE and self.choices:
            raise ValueError("choices are only for inputs of type choice")
        if self.future and self.type not in (InputType.DATE, InputType.DATETIME):
            raise ValueError("future is only for inputs of type date or datetime")
        return self

    @model_validator(mode="after")
    def _a_default_of_its_type(self) -> InputSpec:
        """A default is a value of the input's type, kept as one typed would be (``Premium``
        as ``premium``, ``"no"`` as False, a YAML date as its text); words may name an
        input before them (``"{client} team"``), read when a run starts."""
        words = self.type in (InputType.STRING, InputType.TEXT)
        if self.default is None or (words and isinstance(self.default, str)):
            return self
        try:
            self.default = parse_input("default", self, self.default)
        except InputError as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def asked(self) -> bool:
        """A chat starting its process without it asks for it: a needed input without a
        default, or an optional one with a question (which may be skipped)."""
        if self.required:
            return self.default is None
        return self.question is not None

    def default_for(self, values: Mapping[str, Any]) -> Any:
        """The default; in a text one, ``{name}`` is the value of an input before it."""
        return render(self.default, values) if isinstance(self.default, str) else self.default

    def expected(self) -> str:
        match self.type:
            case InputType.EMAIL:
                return "an email address like jane@example.com"
            case InputType.INTEGER:
                return "a whole number of at most 18 digits"
            case InputType.NUMBER:
                return "a number"
            case InputType.MONEY:
                return "an amount like 1200, 1,200.50, 1.200,50 or €1,200"
            case InputType.DATE:
                return "a date as YYYY-MM-DD"
            case InputType.DATETIME:
                return "a date and time as YYYY-MM-DD HH:MM"
            case InputType.BOOLEAN:
                return "yes or no"
            case InputType.CHOICE:
                return "one of " + ", ".join(self.choices or [])
            case InputType.URL:
                return "a web address starting with http:// or https://"
            case _:
                return f"text (up to {self.max_length} characters)"


class InputError(ValueError):
    def __init__(self, field: str, spec: InputSpec, got: str, problem: str | None = None) -> None:
        self.field = field
        self.spec = spec
        shown = got if len(got) <= 40 else got[:37] + "..."
        super().__init__(f"{field}: {problem or 'expected ' + spec.expected()}, got {shown!r}")


def parse_input(
    field: str,
    spec: InputSpec,
    raw: Any,
    now: datetime | None = None,
    currency: str | None = None,
) -> Any:
    """Turns a typed or given value into the input's type; raises InputError. ``now``, on
    the operator's clock (aware, in STEWARD_TIMEZONE), is what a ``future`` input must
    not be before; without it that is not checked. ``currency`` (STEWARD_CURRENCY) is an
    amount's when it names none."""
    if isinstance(raw, dict | list | tuple):  # from a webhook's JSON: not one value
        raise InputError(field, spec, str(raw), "one value is expected, not a list or an object")
    text = "" if raw is None else str(raw).strip()
    if not text:
        raise InputError(field, spec, text)
    if CONTROL.search(text):
        raise InputError(field, spec, text, "control characters are not allowed")
    if spec.type is not InputType.TEXT and LINE_BREAK.search(text):
        raise InputError(field, spec, text, "one line is expected (a text input takes more)")
    try:
        value = _parse(spec, raw, text, currency)
    except AmbiguousAmount as exc:
        raise InputError(field, spec, text, f"expected {spec.expected()}; {exc}") from None
    except (ValueError, InvalidOperation):
        raise InputError(field, spec, text) from None
    if value is None:
        raise InputError(field, spec, text)
    if spec.type is InputType.DATETIME and now is not None and _skipped(value, now):
        raise InputError(field, spec, text, f"no such time in {now.tzinfo}: the clocks skip it")
    if spec.future and now is not None and _passed(spec, value, now):
        if spec.type is InputType.DATE:
            raise InputError(field, spec, text, f"that has passed (today is {now:%Y-%m-%d})")
        raise InputError(field, spec, text, f"that has passed (it is {now:%Y-%m-%d %H:%M} now)")
    return value


def _skipped(value: str, now: datetime) -> bool:
    """Whether the local time ``value`` is one the clocks jump over on ``now``'s clock:
    "2027-03-28 02:30" in Berlin never comes, and would be read an hour later."""
    local = datetime.fromisoformat(value).replace(tzinfo=now.tzinfo)
    return local.astimezone(UTC).astimezone(now.tzinfo).replace(tzinfo=None) != local.replace(
        tzinfo=None
    )


def _passed(spec: InputSpec, value: str, now: datetime) -> bool:
    if spec.type is InputType.DATE:
        return date.fromisoformat(value) < now.date()
    return datetime.fromisoformat(value).replace(tzinfo=now.tzinfo) <= now


def _parse(spec: InputSpec, raw: Any, text: str, currency: str | None = None) -> Any:
    match spec.type:
        case InputType.EMAIL:
            return text.lower() if EMAIL.match(text) else None
        case InputType.INTEGER:
            if isinstance(raw, bool):
                return None
            whole = int(_ungrouped(text).replace("_", ""))
            return whole if abs(whole) < LARGEST_WHOLE else None  # a run keeps 64 bits
        case InputType.NUMBER:
            number = float(_ungrouped(text))
            return number if math.isfinite(number) else None
        case InputType.MONEY:
            return str(Money.read(text, currency))
        case InputType.DATE:
            return date.fromisoformat(text).isoformat()
        case InputType.DATETIME:
            if not TIME_OF_DAY.search(text):  # a date alone is no time: not midnight
                return None
            moment = datetime.fromisoformat(text.replace(" ", "T", 1))
            return None if moment.tzinfo else moment.isoformat(" ", timespec="minutes")
        case InputType.BOOLEAN:
            lowered = text.lower()
            return True if lowered in TRUE else False if lowered in FALSE else None
        case InputType.CHOICE:
            lowered = text.lower()
            return next((c for c in spec.choices or [] if c.lower() == lowered), None)
        case InputType.URL:
            return text if URL.match(text) else None
        case _:
            return text if len(text) <= spec.max_length else None


def _ungrouped(text: str) -> str:
    """``text`` without the commas between its thousands; a comma elsewhere is an error."""
    if "," in text and not GROUPED.fullmatch(text):
        raise ValueError(text)
    return text.replace(",", "")
