"""Tiered routing of free text to a process: rules and keywords first, a model only if unsure."""

from __future__ import annotations

import calendar
import logging
import re
import shlex
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from graph.budget import BudgetExceeded
from graph.catalog import Catalog
from graph.definitions import ProcessDefinition
from graph.errors import StewardError
from graph.inputs import (
    CURRENCY_CODES,
    CURRENCY_SIGNS,
    CURRENCY_WORDS,
    EMAIL,
    GAP,
    InputError,
    InputSpec,
    InputType,
    Money,
    currency_code,
    parse_input,
)
from graph.messages import cut
from graph.models import LanguageModels, as_data

log = logging.getLogger(__name__)

# The operator waits for the answer: a model that hangs (each attempt may take a minute,
# and a failed one is made twice more) gives way to a command typed out. A wait for room
# in the budgets is not counted (Budgets.patience).
ROUTE_SECONDS = 20.0

WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")
STOPWORDS = frozenset(
    """a an and the to of for on in at with from by is are be this that it its their they
    we our you your my me i please can could would should will up new next""".split()
)
KEY_VALUE = re.compile(r"(\b[a-z_][a-z0-9_]*)=(\"[^\"]*\"|'[^']*'|\S+)")
# A whole amount, never part of one: "$1200.555" is no 1200.55.
AMOUNT = r"(?<![\d.,])\d+(?:,\d{3})*(?:\.\d+)?(?![.,]?\d)"
# With its currency, an amount's figures are all read, as ``Money`` reads them, whichever
# its decimal point: "€1.200,50" is 1,200.50, never 1.20 or 200.50.
# "2 500 €" and "€2 500" (thousands after a space) are asked for: not 500, nor 2.
FIGURES = rf"(?<![\d.,])(?<!\d\s)\d(?:[\d.,]*\d)?(?!\d)(?!{GAP}\d{{3}}(?!\d))"
# A sign or a code just before figures is theirs, never the currency of the figures before
# it: "invoice 1042 €2,500" is €2,500, no €1,042, nor is "due 2026-11-01 €500" €1. Nor
# are figures that end an id or a date ("INV-7 $", "11-01 €") an amount.
AFTER_FIGURES = (
    rf"(?:(?!(?:{CURRENCY_CODES})\b\s?\d)(?:{CURRENCY_WORDS})\b|{CURRENCY_SIGNS}(?!\s?\d))"
)
MONEY = re.compile(
    rf"(?:{CURRENCY_SIGNS}|\b(?:{CURRENCY_CODES}))\s?{FIGURES}"
    rf"|(?<![A-Za-z/-]){FIGURES}\s?{AFTER_FIGURES}",
    re.I,
)
# An amount of its own, not a part of an id or a date: "1,200", not the 42 of "INV-42".
STANDALONE_AMOUNT = re.compile(rf"(?<![\w-]){AMOUNT}(?![\w-])")
ISO_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
ISO_DATE_TIME = re.compile(r"\b\d{4}-\d{2}-\d{2}[ T]\d{1,2}:\d{2}\b")
# The company after "from", "for" or "at"; not "with", which names a person ("onboard Acme
# with Jane as the contact") as often as a company.
AFTER_PREPOSITION = re.compile(r"\b(?:from|for|at)\s+([A-Z][\w&.-]*(?:\s+[A-Z][\w&.-]*)*)")
# Failing that, the company the request's first word acts on: "chase Globex for …"; not
# a person of a company ("welcome Dr Smith of Acme").
VERB_OBJECT = re.compile(
    r"^\s*(?:[Pp]lease\s+)?[A-Za-z][a-z'-]*\s+(?:the\s+)?"
    r"((?>[A-Z][\w&.-]*(?:\s+[A-Z][\w&.-]*)*))(?!\s+(?:of|from|at)\s+[A-Z])"
)
# A company's name may end in a full stop of its own ("Globex Inc."), not of the sentence.
ABBREVIATED = frozenset({"inc", "ltd", "corp", "co", "llc", "plc", "bros", "intl"})
CLIENTISH = ("client", "company", "customer")
IDENTIFYING = frozenset({"number", "id", "reference", "ref", "code"})
# The person before the company: "onboard Jane from Acme", "Sarah of Northwind Legal".
BEFORE_COMPANY = re.compile(
    r"((?:\b[^\W\d_a-z][^\W\d_]*(?:['\u2019-][^\W\d_]+)*\s+){1,4})(?:from|at|of)\s+[A-Z]"
)
# Words that turn a request around, before it names the process: "don't onboard Acme",
# "cancel the Acme onboarding" (not "don't forget the kick-off", nor "onboard Acme, no
# need for a kick-off call").
AGAINST_A_START = re.compile(
    r"\b(?:(?:don['\u2019]?t|do not)\b(?!\s+forget)"
    r"|(?:no need|never|stop|cancel|pause|hold off)\b)",
    re.I,
)
TITLES = frozenset({"mr", "mrs", "ms", "miss", "dr", "prof"})
# Capitalised, and no client, nor a person alone: "onboard Acme for Monday", "for March".
CALENDAR = frozenset(name.lower() for name in [*calendar.month_name, *calendar.day_name] if name)
PERSONISH = ("contact", "person")
CHOSEN = frozenset({InputType.CHOICE, InputType.BOOLEAN})  # the model may read them off words


@dataclass(frozen=True)
class Route:
    process: ProcessDefinition
    values: dict[str, Any] = field(default_factory=dict)
    tier: int = 1
    confidence: float = 0.0
    # What is wrong with each input the words give that the clock refuses, by name: the
    # operator is told, and asked for it again.
    refused: dict[str, str] = field(default_factory=dict)


INPUT_NAME = re.compile(r"[a-z_][a-z0-9_]*")
# What shlex makes of a text without quotes or backslashes: the words between its
# whitespace (ten times quicker than shlex's own reading, a character at a time).
SHELL_QUOTING = frozenset("'\"\\")
# Double quotes as a phone's smart punctuation types them: quotes where no plain one is.
SMART_DOUBLE = "\u201c\u201d\u201e"
AS_PLAIN = str.maketrans(dict.fromkeys(SMART_DOUBLE, '"'))
QUOTED_WHEN_WRITTEN = SHELL_QUOTING | frozenset(SMART_DOUBLE)
SHELL_SPACE = re.compile(r"[ \t\r\n]+")


def parse_arguments(text: str, strict: bool = False) -> tuple[list[str], dict[str, str]]:
    """``onboarding client="Acme Ltd" email=jane@acme.com`` → (["onboarding"], {...}).

    Quotes as a shell takes them; where they do not pair up, an apostrophe is a letter
    (``client=O'Brien``). A double quote left open is an error when ``strict`` (a command:
    what it would start is not what was meant), else the text splits on spaces. In a text
    without a plain double quote, a curly one is one (``client=“Acme Corp”``)."""
    if '"' not in text:
        text = text.translate(AS_PLAIN)
    if SHELL_QUOTING.isdisjoint(text):
        tokens = [token for token in SHELL_SPACE.split(text) if token]
    else:
        try:
            tokens = shlex.split(text)
        except ValueError:
            try:
                tokens = _split_on_double_quotes(text)
            except ValueError:
                if strict:
                    raise StewardError(f"A quote is left open in: {text}") from None
                tokens = text.split()
    positional: list[str] = []
    named: dict[str, str] = {}
    for token in tokens:
        if (pair := keyed(token)) is None:
            positional.append(token)
        elif strict:
            add_named(named, *pair)
        else:
            named[pair[0]] = pair[1]
    return positional, named


def keyed(token: str) -> tuple[str, str] | None:
    """``key=value`` as (the input's name, in lower case, and its value); None for a
    token that is none."""
    key, sep, value = token.partition("=")
    return (key.lower(), value) if sep and INPUT_NAME.fullmatch(key.lower()) else None


def add_named(named: dict[str, str], key: str, value: str) -> None:
    """Adds an input given in a command; one given twice, two ways (``client=A client=B``),
    is refused: which one was meant is not for steward to pick."""
    if key in named and named[key] != value:
        raise StewardError(
            f"{key} is given twice, {format_argument(key, named[key])} and "
            f"{format_argument(key, value)}: give it once"
        )
    named[key] = value


def format_argument(name: str, value: str) -> str:
    """``name=value`` as ``parse_arguments`` reads it back: in double quotes when it holds
    a space or a quote, with a backslash before each double quote and backslash."""
    if QUOTED_WHEN_WRITTEN.isdisjoint(value) and not any(c.isspace() for c in value):
        return f"{name}={value}"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{name}="{escaped}"'


def _split_on_double_quotes(text: str) -> list[str]:
    """As ``shlex.split``, but for double quotes and backslashes alone."""
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split = True
    lexer.quotes = '"'
    lexer.commenters = ""
    return list(lexer)


def extract_values(definition: ProcessDefinition, text: str) -> dict[str, Any]:
    """Inputs that can be read off plain text without a model; wrong guesses are dropped."""
    return _read_values(definition, text, None)[0]


def _read_values(
    definition: ProcessDefinition, text: str, now: datetime | None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The inputs ``text`` holds, read on the clock ``now`` (see ``parse_input``), and
    what is wrong with each it holds that the clock refuses (a kick-off that has passed),
    by name; other wrong guesses are dropped."""
    found: dict[str, Any] = {}
    refused: dict[str, str] = {}
    _, named = parse_arguments(text) if "=" in text else ([], {})
    for name, spec in definition.inputs.items():
        candidate: str | None = named.get(name)
        if candidate is None:
            candidate = _read_off(definition, name, spec, text)
        if candidate is None:
            continue
        try:
            found[name] = definition.read_input(name, candidate, now)
        except InputError as exc:
            if _read_but_for_the_clock(definition, name, candidate, now) is not None:
                refused[name] = str(exc)
    return found, refused


def _read_but_for_the_clock(
    definition: ProcessDefinition, name: str, raw: str, now: datetime | None
) -> Any:
    """Input ``name`` as ``raw`` gives it, read on no clock, when it is the clock ``now``
    alone that refuses it (it has passed); None otherwise."""
    if now is None:
        return None
    try:
        return definition.read_input(name, raw)
    except InputError:
        return None


def _read_off(definition: ProcessDefinition, name: str, spec: InputSpec, text: str) -> str | None:
    """The one value of ``spec``'s type that ``text`` holds; None for none, or several."""
    if spec.type is InputType.EMAIL:
        emails = [w.strip(".,;()<>") for w in text.split() if "@" in w]
        return _the_one([e for e in emails if EMAIL.match(e)])
    if spec.type is InputType.CHOICE:
        lowered = text.lower()
        choices = spec.choices or []
        return _the_one([c for c in choices if re.search(rf"\b{re.escape(c.lower())}\b", lowered)])
    if spec.type is InputType.MONEY:
        return _the_one([m.group(0) for m in MONEY.finditer(text)])
    if spec.type is InputType.DATE:
        return _the_one(ISO_DATE.findall(text))
    if spec.type is InputType.DATETIME:
        return _the_one(ISO_DATE_TIME.findall(text))
    if spec.type is InputType.STRING and any(w in name for w in CLIENTISH):
        return _company(text)
    if spec.type is InputType.STRING and any(w in name for w in PERSONISH):
        return _first_name(definition, text)
    if spec.type is InputType.STRING and _an_identifier(spec):
        return _the_one(_identifiers_after(name, text))
    return None


def _an_identifier(spec: InputSpec) -> bool:
    """Whether the definition calls the input a number or an id ("the invoice number"):
    "topic 5 tips for winter" holds no topic "5"."""
    said = WORD.findall(f"{spec.description} {spec.question or ''}".lower())
    return not IDENTIFYING.isdisjoint(said)


def _company(text: str) -> str | None:
    """The one company named after "from", "for" or "at"; else the one the request
    acts on ("chase Globex for invoice INV-7"). Never a month or a day, nor a name
    with a digit in it (an invoice number), nor a currency ("for EUR 2.500,00")."""
    for pattern in (AFTER_PREPOSITION, VERB_OBJECT):
        names = [
            _without_full_stop(name)
            for name in pattern.findall(text)
            if name.split()[0].lower() not in CALENDAR
            and currency_code(name) is None
            and not any(c.isdigit() for c in name)
        ]
        if names:
            return _the_one(names)
    return None


def _without_full_stop(name: str) -> str:
    """``Acme.`` at a sentence's end is Acme; ``Globex Inc.`` and ``Acme S.A.`` keep theirs."""
    last = name.split()[-1]
    if not last.endswith(".") or last[:-1].lower() in ABBREVIATED or "." in last[:-1]:
        return name
    return name[:-1]


def _identifiers_after(name: str, text: str) -> list[str]:
    """What follows an input's name and holds a digit: "invoice INV-7", "invoice #1042",
    "order no. 88", "invoice 1042 €2,500"; not a date, nor an amount ("invoice 1,200 EUR",
    "invoice 1200 €")."""
    after = re.compile(
        rf"\b{re.escape(name.replace('_', ' '))}\s+(?:number\s+|no\.?\s*|#\s*)?"
        rf"#?([A-Za-z0-9][\w/-]*)(?![\w/.,-]?\d)(?!\s?{AFTER_FIGURES})",
        re.I,
    )
    return [
        found
        for found in after.findall(text)
        if any(c.isdigit() for c in found) and not ISO_DATE.fullmatch(found)
    ]


def _the_one(found: list[str]) -> str | None:
    """What was found, if exactly one thing was: two candidates are a guess."""
    return found[0] if len(found) == 1 else None


def _first_name(definition: ProcessDefinition, text: str) -> str | None:
    """The first name of the one person named before a company, not counting the words
    that name the process ("Onboard Jane Doe from Acme": Jane); a title with the name
    after it ("Dr Smith")."""
    named = _the_one(BEFORE_COMPANY.findall(text))
    if named is None:
        return None
    calling = {definition.name, *definition.aliases, *definition.title.split()}
    process_words = set(WORD.findall(" ".join(calling).lower()))
    words = [word for word in named.split() if word.lower() not in process_words]
    if len(words) > 1 and words[0].lower().rstrip(".") in TITLES:  # "Dr Smith"
        return f"{words[0]} {words[1]}"
    names = [word for word in words if not (len(word) > 1 and word.isupper())]  # not ACME
    if len(names) == 1 and names[0].lower() in CALENDAR:  # "for March", not "April Smith"
        return None
    return names[0] if names else None


class Router:
    def __init__(self, catalog: Catalog, models: LanguageModels | None = None) -> None:
        self.catalog = catalog
        self.models = models

    def by_rules(self, text: str, now: datetime | None = None) -> Route | None:
        """Tier 1: names, aliases and description words. None when no clear winner, or
        when the words are against a start. Inputs are read on the clock ``now`` (the
        operator's), when given: a date that must be to come and has passed is refused."""
        lowered = text.lower()
        words = set(WORD.findall(lowered)) - STOPWORDS
        scored = sorted(
            ((self._score(d, lowered, words), d) for d in self.catalog),
            key=lambda pair: pair[0],
            reverse=True,
        )
        if not scored or scored[0][0] < 2.0:
            return None
        best_score, best = scored[0]
        runner_up = scored[1][0] if len(scored) > 1 else 0.0
        if best_score < 1.5 * runner_up:
            return None
        if _against_a_start(best, text):
            return None
        confidence = min(1.0, best_score / 6)
        values, refused = _read_values(best, text, now)
        return Route(best, values, tier=1, confidence=confidence, refused=refused)

    @staticmethod
    def _score(definition: ProcessDefinition, lowered: str, words: set[str]) -> float:
        score = 0.0
        if re.search(rf"\b{re.escape(definition.name.replace('_', ' '))}\b", lowered) or (
            definition.name in words
        ):
            score += 3
        for alias in definition.aliases:
            if re.search(rf"\b{re.escape(alias.lower())}\b", lowered):
                score += 3 if " " in alias else 2.5
        title_words = set(WORD.findall(definition.title.lower())) - STOPWORDS
        score += 1.0 * len(words & title_words)
        described = set(WORD.findall(definition.description.lower())) - STOPWORDS - title_words
        score += 0.5 * len(words & described)
        return score

    async def by_model(self, text: str, now: datetime | None = None) -> Route | None:
        """Tier 2: the fast model picks a process and reads inputs; validated like typing,
        on the clock ``now`` as ``by_rules`` reads them. An input is kept only when the
        operator's words hold it (see ``_as_said``): one the model wrote itself (an
        address, an amount) is asked for instead."""
        if self.models is None:
            return None
        menu = "\n".join(
            f"- {d.name}: {d.description} Inputs: "
            + ", ".join(f"{n} ({s.type.value}: {s.description})" for n, s in d.inputs.items())
            for d in self.catalog
        )
        prompt = (
            "Which process does the operator want to start, and which inputs did they give? "
            "Answer with process null if none fits.\n"
            f"Processes:\n{menu}\n\nOperator: {as_data(text)}"
        )
        try:
            choice = await self.models.extract(
                _ModelRoute, prompt, purpose="route", within=ROUTE_SECONDS
            )
        except BudgetExceeded as exc:  # the operator hears why plain words are not understood
            raise NotRouted(exc.spent) from exc
        except TimeoutError as exc:
            raise NotRouted(f"it did not answer within {ROUTE_SECONDS:g} s") from exc
        except ValueError as exc:  # an answer that does not fit: a model unsure
            log.warning("the model's route did not fit: %s", exc)
            return None
        except Exception as exc:  # the model failed: an outage, a refusal, a wrong key
            log.warning("could not route by model: %s", exc)
            raise NotRouted(f"it failed: {_short(exc)}") from exc
        definition = self.catalog.get(choice.process or "")
        if definition is None or choice.confidence < 0.5 or _against_a_start(definition, text):
            return None
        values: dict[str, Any] = {}
        refused: dict[str, str] = {}
        for given in choice.inputs:
            spec = definition.inputs.get(given.name)
            if spec is None:
                continue
            try:
                value = _as_said(
                    spec, given.value, definition.read_input(given.name, given.value, now), text
                )
            except InputError as exc:
                passed = _read_but_for_the_clock(definition, given.name, given.value, now)
                if passed is not None and _as_said(spec, given.value, passed, text) is not None:
                    refused[given.name] = str(exc)
                continue
            if value is not None:
                values[given.name] = value
        return Route(definition, values, tier=2, confidence=choice.confidence, refused=refused)


class NotRouted(StewardError):
    """The model that reads plain words could not be asked: nothing was started."""

    def __init__(self, why: str) -> None:
        super().__init__(
            f"I could not ask the model what you meant ({why}), so nothing was started. "
            "Say it as a command: /run PROCESS key=value … (/processes lists them)."
        )


def opens_a_request(route: Route, text: str) -> bool:
    """Whether ``text``, which ``route`` read, is plainly a request: it opens by calling
    its process (by its name, an alias, or the verb its description opens with: "chase
    Globex for invoice INV-7 of $1,200 due 2026-11-01 (ap@globex.com)") and gives it
    two inputs or more. A remark names it in passing ("The welcome email is too formal");
    one that gives one input corrects a draft ("Invoice amount should be $1,200")."""
    lowered = text.lower().lstrip()
    verb = WORD.match(route.process.description.lower())
    opens = _first_named(route.process, lowered) == 0 or (
        verb is not None
        and verb.group() not in STOPWORDS  # "A weekly report …" opens with no verb
        and re.match(rf"{re.escape(verb.group())}\b", lowered) is not None
    )
    return opens and len(route.values) >= 2


def _against_a_start(definition: ProcessDefinition, text: str) -> bool:
    """Whether ``text`` turns against starting ``definition`` before it names it: "don't
    onboard Acme", not "onboard Stop & Shop"."""
    against = AGAINST_A_START.search(text)
    return against is not None and against.start() < _first_named(definition, text.lower())


def _first_named(definition: ProcessDefinition, lowered: str) -> int:
    """Where ``lowered`` first names ``definition`` by its name or an alias; its end when
    it does not."""
    names = [definition.name.replace("_", " "), definition.name, *definition.aliases]
    found = (re.search(rf"\b{re.escape(name.lower())}", lowered) for name in names)
    return min((match.start() for match in found if match), default=len(lowered))


def _as_said(spec: InputSpec, given: str, value: Any, text: str) -> Any:
    """``value``, which the model ``given``, as the operator's words ``text`` hold it;
    None when they do not: one of a few choices always; an amount when it is one of the
    amounts they hold, as numbers, and as they wrote it ("$2,500" for its "2500.00", and
    no "1200" for their "$12,000"); anything else as written, whatever its case and
    punctuation."""
    if spec.type in CHOSEN:
        return value
    if spec.type is InputType.MONEY:
        amount = Money.read(value).amount
        return next(
            (said for said in _amounts(spec, text) if Money.read(said).amount == amount), None
        )
    return value if _bare(given) in _bare(text) else None


def _amounts(spec: InputSpec, text: str) -> list[str]:
    """The amounts ``text`` holds, as ``spec`` reads them: those written with their
    currency ("2500EUR") first, then its numbers of their own."""
    written = [m.group(0) for m in MONEY.finditer(text)] + STANDALONE_AMOUNT.findall(text)
    amounts = []
    for amount in written:
        with suppress(InputError):
            amounts.append(parse_input("amount", spec, amount))
    return amounts


def _bare(text: str) -> str:
    """``text`` in lower case, of its letters, digits, ``@`` and ``.`` alone: "$2,500" and
    "2500", "Acme  Corp" and "acme corp" are the same."""
    return "".join(c for c in text.lower() if c.isalnum() or c in "@.")


def _short(exc: Exception) -> str:
    """An error's first line, cut: a service's error may carry a whole page."""
    return cut(" ".join(str(exc).split()) or type(exc).__name__, 200)


class _Input(BaseModel):
    name: str
    value: str


class _ModelRoute(BaseModel):
    """The model's answer. Inputs are a list of pairs, not an object keyed by name:
    OpenAI's structured outputs refuse an object whose keys the schema does not name."""

    process: str | None = None
    inputs: list[_Input] = Field(default_factory=list)
    confidence: float = Field(default=0.0, ge=0.0, le=1.0)
