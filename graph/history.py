"""Answers about history: "what did we quote Acme in March?"

The question gives the filters — a time ("last week", "in March", "yesterday") and the
known clients it names — then long-term memory finds the records by keywords and
meaning. With a model the answer is a few sentences citing its sources by number; with
none, or when the model fails, it is the best matching records, each cited.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from time import monotonic as _monotonic
from typing import Any
from zoneinfo import ZoneInfo

from graph.budget import HISTORY_PURPOSE, BudgetExceeded
from graph.messages import cut
from graph.models import LanguageModels, ModelUnusable, as_data
from graph.remembering import entity_name
from memory.embeddings import Embedder, EmbeddingFailed, Vector
from memory.ledger import Ledger
from memory.longterm import Filters, Hit, LongTermMemory, MemoryRecord, MemoryUnavailable, Query
from memory.longterm.sync import MemorySync

log = logging.getLogger(__name__)

UTC = ZoneInfo("UTC")
SOURCES = 8  # records an answer draws on
WIDER = 3  # a widened search looks this many times as far: some of it is another client's
ALPHA = 0.5  # hybrid weight of meaning against keywords (0: keywords only)
NOTHING = "I found nothing about that in my memory."
CATCH_UP_SECONDS = 2.0
# A question waits no longer for its vector: an embedder that hangs (a remote one retries
# for up to a minute and a half) leaves the answer to keywords alone.
EMBED_QUERY_SECONDS = 2.0
# A model's answer waits no longer, and says no more (it is asked for three sentences):
# past either, the records answer. Each attempt may take a minute, and a failed one is
# made twice more. A wait for room in the budgets is not counted (Budgets.patience).
ANSWER_SECONDS = 30.0
ANSWER_CHARS = 3000
# A record says no more to the model than this (a draft, an edit, a pasted email may run
# to pages): eight of them, whole, made each question cost as much as a long draft.
RECORD_CHARS = 2000
UNAVAILABLE = "My long-term memory is not available right now ({}). Try again soon."
# A model's citation: "[2]", "[1, 3]", "[2-4]".
# Not "[2026-03-01]", a date: no answer draws on a thousand sources.
_CITATION = re.compile(r"\[\s*(\d{1,3}(?:\s*[,–-]\s*\d{1,3})*)\s*\]")

MONTHS = {name.lower(): number for number, name in enumerate(calendar.month_name) if name}
MONTHS |= {name.lower(): number for number, name in enumerate(calendar.month_abbr) if name}
_MONTH = "|".join(sorted(MONTHS, key=len, reverse=True))
# "in March", "during Sep 2025", "in March last year", "in March of 2025" — not "from
# May", which is more often a name.
_IN_MONTH = re.compile(
    rf"\b(?:in|during)\s+({_MONTH})\b\.?"
    r"(?:,?\s+(?:of\s+)?(\d{4})\b|\s+(?:of\s+)?(last|this)\s+year\b)?",
    re.I,
)
# Right after a word that bounds a time ("since November", "before Monday"): a month's or
# a weekday's name, or a date, is a time there as it is after "in" or "on".
_BOUNDED = "(?:{})".format(
    "|".join(rf"(?<=\b{word}\s)" for word in ("since", "before", "until", "till", "after"))
)
# "last November": the last November before this month; "since November" (a month's
# full name: "since Jan called" is about Jan).
_LAST_MONTH = re.compile(
    rf"\blast\s+({_MONTH})\b\.?|{_BOUNDED}({'|'.join(calendar.month_name[1:])})\b", re.I
)
_IN_YEAR = re.compile(r"\b(?:in|during)\s+((?:19|20)\d\d)\b", re.I)
WEEKDAYS = {name.lower(): number for number, name in enumerate(calendar.day_name)}
# "on Tuesday", "last Friday", "since Monday": the last such day before today.
_WEEKDAY = re.compile(rf"(?:\b(?:on|last)\s+|{_BOUNDED})({'|'.join(WEEKDAYS)})\b(?!\s+\d)", re.I)
# "on 2026-11-03", "since 2026-10-01", "2026-11-03" (not "INV-2026-11-03").
_ON_DATE = re.compile(rf"(?:\bon\s+|{_BOUNDED}|(?<![\w-]))(\d{{4}}-\d{{2}}-\d{{2}})(?![\w-])")
# A count, its thousands set apart by commas or not ("1,000", "1000"), or in words.
_WORDS = "one two three four five six seven eight nine ten eleven twelve".split()
_COUNTS = {"a": 1, "an": 1} | {word: number for number, word in enumerate(_WORDS, 1)}
_COUNT = rf"\d{{1,3}}(?:,\d{{3}})+(?!\d)|\d+|{'|'.join(_WORDS)}"
_LAST_DAYS = re.compile(rf"\b(?:last|past)\s+({_COUNT})\s+(hour|day|week|month|year)s?\b", re.I)
_UNIT_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}
# "the past week", "the last week", "the last 24 hours" (but "last week" is the week
# before this one)
_PAST = re.compile(
    r"\b(?:past|(?<=\bthe\s)last|last(?=\s+24\s+hours))\s+(24\s+hours|day|week|month|year)\b",
    re.I,
)
_AGO = re.compile(rf"\b({_COUNT}|a|an)\s+(day|week|month|year)s?\s+ago\b", re.I)
# "the last week of November", "the first week of March 2025": its last or first 7 days.
_WEEK_OF = re.compile(
    rf"\b(?:the\s+)?(first|last)\s+week\s+of\s+({_MONTH})\b\.?(?:,?\s+(\d{{4}})\b)?", re.I
)
_DAY_BEFORE = re.compile(r"\b(?:the\s+)?day\s+before\s+yesterday\b", re.I)
_SINCE = re.compile(r"\bsince\s*$", re.I)  # before a time: from it until now
# Before a time: all before it, all up to its end, or all after it until now (not "the
# week before last week", "the day after Monday").
_BOUND = re.compile(
    r"(?<!day\s)(?<!week\s)(?<!month\s)(?<!year\s)"
    r"\b(?:(before|prior\s+to)|(until|till|up\s+to)|(after))\s*$",
    re.I,
)
_JOINED = re.compile(r"\s*,?\s*(?:and|or|&)\s*", re.I)  # between two times: both
# An end of a time range: a day ("2026-10-01", "3 November", "Nov 3rd 2025"; "3" to start
# one, taking the month of its end), a month ("September", "Sep 2025"), a weekday ("last"
# or not), "today", "yesterday".
_NTH = r"(?:st|nd|rd|th)?"
_DAY_OF_MONTH = rf"(\d{{1,2}}){_NTH}(?:\s+(?:of\s+)?({_MONTH})\.?)?(?:,?\s+(\d{{4}}))?"
_MONTH_DAY = rf"({_MONTH})\.?(?:\s+(\d{{1,2}}){_NTH}(?!\d))?(?:,?\s+(\d{{4}}))?"
_END = (
    rf"(?:\d{{4}}-\d{{2}}-\d{{2}}|{_DAY_OF_MONTH}|{_MONTH_DAY}|(?:last\s+)?(?:{'|'.join(WEEKDAYS)})"
    r"|today|yesterday)"
)
# "on 3 November", "on the 3rd of Nov 2025", "since November 3rd": a day of a month.
_ON_DAY = re.compile(
    rf"(?:\bon\s+|{_BOUNDED})(?:the\s+)?(?P<day>\d{{1,2}}{_NTH}\s+(?:of\s+)?(?:{_MONTH})\b\.?"
    rf"(?:,?\s+\d{{4}})?|(?:{_MONTH})\.?\s+\d{{1,2}}{_NTH}(?!\d)(?:,?\s+\d{{4}})?)(?!\w)",
    re.I,
)
# "from 3 to 10 November", "between Monday and Wednesday", "from 2026-10-01 until
# 2026-10-15", "from September through November": both ends included.
_RANGE = re.compile(
    rf"\b(?P<opener>from|between)\s+(?P<start>{_END})\s+(?P<to>to|until|till|through|and)\s+"
    rf"(?P<end>{_END})(?!\w)",
    re.I,
)
# The furthest back a count of days reaches ("the last 99999 days" asks for all there is):
# a hundred years, well before any record and well after the first day a date can name.
_FURTHEST = 36525
_PAST_DAYS = {"24 hours": 2, "day": 2, "week": 7, "month": 30, "year": 365}
_QUESTION_WORDS = re.compile(
    r"^(what|what's|when|who|whom|which|why|how|where|whose|did|didn't|remind me|tell me"
    r"|show me)\b",
    re.I,
)
# A yes-or-no question, with its question mark: "has Acme paid?" asks, where "Has a typo
# in the name", a rejection's reason, says.
_YES_OR_NO = re.compile(
    r"^(?:(?:does|is|are|was|were|has)(?:n['\u2019]t)?|(?:do|have)(?:n['\u2019]t)?\s+(?:we|i|you|they))"
    r"\b.*\?$",
    re.I | re.S,
)


_REQUEST = re.compile(
    r"^(?:(?:can|could|would|will)\s+(?:you|we)|please|let's|lets|is it possible to"
    r"|are you able to)\b",
    re.I,
)


# Question marks: Latin, full-width (Chinese, Japanese), Arabic.
QUESTION_MARKS = ("?", "\uff1f", "\u061f")
# Korean syllables ending in ㅆ or ㅄ, as a verb's past does ("보냈", "했", "었") and
# "있", "없" do: a plain 니 after one asks ("보냈니"), where after another it often ends a
# word ("어머니", mother; "언니").
_SS_FINAL = "".join(
    chr(0xAC00 + 28 * opening + final) for opening in range(19 * 21) for final in (18, 20)
)
# What ends a question as its mark does, where the mark is often left out: Japanese か
# ("送りましたか", "ですか。"), Chinese 吗 or 嗎 ("付款了吗"), Korean 까 ("보냈습니까"),
# 나요 ("보냈나요") or that 니 ("보냈니"), a full stop or none after.
_QUESTION_PARTICLE = re.compile(
    rf"(?:[\u304b\u5417\u55ce\uae4c]|\ub098\uc694|[{_SS_FINAL}]\ub2c8)[\u3002\uff0e.]?$"
)


def looks_like_a_question(text: str) -> bool:
    """Asked about what happened: it starts as a question does ("what", "when did",
    "remind me"), or ends with a question mark or a particle that asks (か, 吗, 까, 나요,
    보냈니) and is not a request ("can you …?")."""
    stripped = text.strip()
    if _REQUEST.match(stripped):
        return False
    return (
        stripped.endswith(QUESTION_MARKS)
        or _QUESTION_PARTICLE.search(stripped) is not None
        or bool(_QUESTION_WORDS.match(stripped))
    )


def plainly_a_question(text: str) -> bool:
    """Starts as a question does: not a request, whatever words it uses."""
    stripped = text.strip()
    if _REQUEST.match(stripped):
        return False
    return bool(_QUESTION_WORDS.match(stripped) or _YES_OR_NO.match(stripped))


def read_question(
    question: str, now: datetime, zone: ZoneInfo, entities: KnownEntities | list[str]
) -> Filters:
    """Takes the time and the client out of ``question`` as filters."""
    known = entities if isinstance(entities, KnownEntities) else KnownEntities(entities)
    today = now.astimezone(zone).date()
    since, until, _ = _period(question, today)
    return Filters(
        since=_start_of(since, zone) if since else None,
        until=_start_of(until, zone) if until else None,
        entities=tuple(
            spelling for entity in known.all_named(question) for spelling in known.spellings(entity)
        ),
    )


def search_words(question: str) -> str:
    """The question without the time it names, which is a filter and no word to find
    ("this week" would find every email that says it)."""
    _, _, (start, end) = _period(question, date.today())
    return f"{question[:start]} {question[end:]}".strip() if end else question


PHRASES = (
    "this morning",
    "this afternoon",
    "this evening",
    "tonight",
    "last night",  # and its small hours, today
    "today",
    "yesterday",
    "last weekend",
    "this weekend",  # the one under way, else the last
    "over the weekend",  # not "the weekend rate"
    "at the weekend",
    "on the weekend",
    "during the weekend",
    "the week before last",
    "this week",
    "last week",
    "the month before last",
    "this month",
    "last month",
    "this year",
    "last year",
)
_PHRASE = re.compile(rf"\b({'|'.join(PHRASES)})\b", re.I)

Span = tuple[int, int]


def _period(question: str, today: date) -> tuple[date | None, date | None, Span]:
    """The days a question asks about, from and until (exclusive; None: no bound), and
    where it says so; after "since", from then until today; after "before", "until" or
    "after", all before it, up to its end or after it; two times joined ("yesterday and
    today", "in January or in February"), from the first's start to the second's end."""
    try:
        start, end, (at, to) = _named_period(question, today)
    except (ValueError, OverflowError):  # "in December 9999": no day follows its last
        return None, None, (0, 0)
    if start is not None and (since := _SINCE.search(question[:at])):
        return start, today + timedelta(days=1), (since.start(), to)
    if start is not None and end is not None and (bound := _BOUND.search(question[:at])):
        before, until, _ = bound.groups()
        if before or until:  # "before Monday", "until yesterday"
            return None, start if before else end, (bound.start(), to)
        return end, today + timedelta(days=1), (bound.start(), to)  # "after 1 March"
    if start is None or end is None:
        return start, end, (at, to)
    joined = _joined(question, today, (at, to))
    if joined is None:
        return start, end, (at, to)
    other, other_end, (other_at, other_to) = joined
    return min(start, other), max(end, other_end), (min(at, other_at), max(to, other_to))


def _joined(question: str, today: date, span: Span) -> tuple[date, date, Span] | None:
    """The time joined to the one ``question`` names at ``span`` by "and" or "or", before
    or after it, whole ("today or yesterday", "in May and in June") or after the first's
    "in" or "on" ("in May or June", "on Monday and Tuesday")."""
    at, to = span
    blanked = question[:at] + " " * (to - at) + question[to:]
    other, other_end, (other_at, other_to) = _named_period(blanked, today)
    if other is not None and other_end is not None:
        between = question[to:other_at] if to <= other_at else question[other_to:at]
        if _JOINED.fullmatch(between):
            return other, other_end, (other_at, other_to)
    opener = re.match(r"(?:in|during|on)\s", question[at:to], re.I)
    if opener is None or (joined := _JOINED.match(question, to)) is None:
        return None
    other, other_end, (other_at, other_to) = _named_period(
        opener.group(0) + question[joined.end() :], today
    )
    if other is None or other_end is None or other_at != 0:
        return None
    return other, other_end, (to, joined.end() + other_to - len(opener.group(0)))


def _number(digits: str) -> int:
    """The count ``digits`` say ("1,000", "two" too), or one beyond the furthest back in
    hours when there are too many of them to read (Python refuses to read more than 4300)."""
    if digits.lower() in _COUNTS:
        return _COUNTS[digits.lower()]
    digits = digits.replace(",", "").lstrip("0") or "0"
    return int(digits) if len(digits) <= len(str(_FURTHEST * 24)) else _FURTHEST * 24 + 1


def _named_period(question: str, today: date) -> tuple[date | None, date | None, Span]:
    tomorrow = today + timedelta(days=1)
    if ranged := _range_in(question, today):
        return ranged
    if match := _WEEK_OF.search(question):
        month = MONTHS[match.group(2).lower()]
        year = int(match.group(3)) if match.group(3) else _latest(month, today).year
        start = date(year, month, 1)
        if match.group(1).lower() == "last":
            start = _next_month(start) - timedelta(days=7)
        return start, start + timedelta(days=7), match.span()
    if match := _LAST_DAYS.search(question):
        count, unit = _number(match.group(1)), match.group(2).lower()
        if unit == "hour":  # "the last 12 hours": today and yesterday, as 24 are
            days = min(-(-count // 24) + 1, _FURTHEST)
        else:
            days = min(max(1, count) * _UNIT_DAYS[unit], _FURTHEST)
        return today - timedelta(days=days - 1), tomorrow, match.span()
    if match := _PAST.search(question):  # "the past week": the seven days up to today
        days = _PAST_DAYS[" ".join(match.group(1).lower().split())]
        return today - timedelta(days=days - 1), tomorrow, match.span()
    if match := _AGO.search(question):  # "2 days ago": that day; "a week ago": that week
        unit = match.group(2).lower()
        count = min(_number(match.group(1)), _FURTHEST // _UNIT_DAYS[unit])
        if unit == "day":
            then = today - timedelta(days=count)
            return then, then + timedelta(days=1), match.span()
        if unit == "week":
            monday = today - timedelta(days=today.weekday() + 7 * count)
            return monday, monday + timedelta(days=7), match.span()
        if unit == "month":  # "a month ago": that month
            months = today.year * 12 + today.month - 1 - count
            first = date(months // 12, months % 12 + 1, 1)
            return first, _next_month(first), match.span()
        return date(today.year - count, 1, 1), date(today.year - count + 1, 1, 1), match.span()
    if (match := _ON_DAY.search(question)) and (day := _day_said(match.group("day"), today)):
        return day, day + timedelta(days=1), match.span()
    if match := _IN_MONTH.search(question):
        month = MONTHS[match.group(1).lower()]
        if match.group(2):
            year = int(match.group(2))
        elif match.group(3):
            year = today.year - (match.group(3).lower() == "last")
        else:
            year = _latest(month, today).year  # "in November", asked in March
        start = date(year, month, 1)
        return start, _next_month(start), match.span()
    if (match := _ON_DATE.search(question)) and (day := _iso_day(match.group(1))):
        return day, day + timedelta(days=1), match.span()
    if match := _LAST_MONTH.search(question):
        month = MONTHS[(match.group(1) or match.group(2)).lower()]
        start = _latest(month, today, over=bool(match.group(1)))
        return start, _next_month(start), match.span()
    if match := _WEEKDAY.search(question):
        back = (today.weekday() - WEEKDAYS[match.group(1).lower()] - 1) % 7 + 1
        then = today - timedelta(days=back)
        return then, then + timedelta(days=1), match.span()
    if match := _IN_YEAR.search(question):
        year = int(match.group(1))
        return date(year, 1, 1), date(year + 1, 1, 1), match.span()
    if match := _DAY_BEFORE.search(question):
        return today - timedelta(days=2), today - timedelta(days=1), match.span()
    monday = today - timedelta(days=today.weekday())
    first = today.replace(day=1)
    saturday = monday + timedelta(days=5)
    weekend = (saturday, tomorrow) if today >= saturday else (monday - timedelta(days=2), monday)
    periods: dict[str, tuple[date, date]] = {
        "this morning": (today, tomorrow),
        "this afternoon": (today, tomorrow),
        "this evening": (today, tomorrow),
        "tonight": (today, tomorrow),
        "last night": (today - timedelta(days=1), tomorrow),
        "today": (today, tomorrow),
        "yesterday": (today - timedelta(days=1), today),
        "last weekend": (monday - timedelta(days=2), monday),
        "this weekend": weekend,
        "over the weekend": weekend,
        "at the weekend": weekend,
        "on the weekend": weekend,
        "during the weekend": weekend,
        "the week before last": (monday - timedelta(days=14), monday - timedelta(days=7)),
        "this week": (monday, tomorrow),
        "last week": (monday - timedelta(days=7), monday),
        "the month before last": (_previous_month(_previous_month(first)), _previous_month(first)),
        "this month": (first, tomorrow),
        "last month": (_previous_month(first), first),
        "this year": (date(today.year, 1, 1), tomorrow),
        "last year": (date(today.year - 1, 1, 1), date(today.year, 1, 1)),
    }
    named = {m.group(1).lower(): m.span() for m in _PHRASE.finditer(question)}
    for phrase in PHRASES:  # "today" before "this week", should both be there
        if phrase in named:
            start, end = periods[phrase]
            return start, end, named[phrase]
    return None, None, (0, 0)


@dataclass(frozen=True)
class _End:
    """An end of a time range as it was said: a day (of a month, of a year or not), a
    month, a weekday, or one day known already ("2026-10-01", "today")."""

    day: int | None = None
    month: int | None = None
    year: int | None = None
    weekday: int | None = None
    exact: date | None = None

    @classmethod
    def read(cls, said: str, today: date) -> _End | None:
        said = " ".join(said.lower().split())
        if said in ("today", "yesterday"):
            return cls(exact=today - timedelta(days=said == "yesterday"))
        if (weekday := said.removeprefix("last ")) in WEEKDAYS:  # "last Monday" is "Monday"
            return cls(weekday=WEEKDAYS[weekday])
        if said[:1].isdigit() and "-" in said:
            return cls(exact=exact) if (exact := _iso_day(said)) else None
        if match := re.fullmatch(_DAY_OF_MONTH, said):
            day, month, year = match.groups()
        elif match := re.fullmatch(_MONTH_DAY, said):
            month, day, year = match.groups()
        else:
            return None
        return cls(
            int(day) if day else None,
            MONTHS[month] if month else None,
            int(year) if year else None,
        )

    def in_year(self, year: int) -> tuple[date, date]:
        """Its first day and the day after its last, in ``year`` unless it names one."""
        if self.exact is not None:
            return self.exact, self.exact + timedelta(days=1)
        assert self.month is not None
        year = self.year or year
        if self.day is None:
            return date(year, self.month, 1), _next_month(date(year, self.month, 1))
        day = date(year, self.month, self.day)
        return day, day + timedelta(days=1)

    @property
    def year_said(self) -> int | None:
        return self.exact.year if self.exact is not None else self.year


def _range_in(question: str, today: date) -> tuple[date, date, Span] | None:
    """The first range of days ``question`` names, and where."""
    for match in _RANGE.finditer(question):
        if (match.group("opener").lower() == "between") != (match.group("to").lower() == "and"):
            continue  # "from Monday and …", "between May to …": no range
        if days := _range(match.group("start"), match.group("end"), today):
            return *days, match.span()
    return None


def _range(start_said: str, end_said: str, today: date) -> tuple[date, date] | None:
    """The days from ``start_said`` to ``end_said``, both included, as the days after
    "since" are read: a weekday is the last one before today, a day or a month of no
    year the latest begun by today, and the end the first such after the start, in a
    month begun by today (else the range is a year earlier: history is past); days of
    one month given the wrong way round are read the right way ("between 10 and 3
    November", "from 10 Nov to 3 Nov"). None when the two make no range ("between 3 and
    10": a day needs its month)."""
    start, end = _End.read(start_said, today), _End.read(end_said, today)
    if start is None or end is None:
        return None
    if start.weekday is not None:
        first = today - timedelta(days=(today.weekday() - start.weekday - 1) % 7 + 1)
        if end.weekday is not None:
            last = first + timedelta(days=(end.weekday - start.weekday) % 7)
            return first, last + timedelta(days=1)
        return (first, end.exact + timedelta(days=1)) if end.exact and end.exact >= first else None
    if end.weekday is not None:
        return None
    if end.month is None and end.exact is None:  # "to 10 clients": no day of a month
        return None
    if start.month is None and start.exact is None:  # "between 3 and 10 November"
        if end.month is None:
            return None
        start = replace(start, month=end.month)
    if (
        start.month is not None
        and start.month == end.month
        and (start.year is None or end.year is None or start.year == end.year)
        and start.day is not None
        and end.day is not None
        and start.day > end.day
    ):  # "between 10 and 3 November", "from 10 Nov to 3 Nov": one month's days, reversed
        year = start.year or end.year
        start, end = replace(start, day=end.day, year=year), replace(end, day=start.day, year=year)
    try:
        if start.year_said is not None:
            year = start.year_said
        elif end.year_said is not None:  # "from December to 2 January 2026": 2025's
            year = end.year_said
            year -= start.in_year(year)[0] > end.in_year(year)[0]
        else:
            year = today.year - (start.in_year(today.year)[0] > today)
        first, after, end_first, end_after = _days_from(start, end, year)
        if start.year_said is None and end.year_said is None and end_first.replace(day=1) > today:
            # "from November to September", asked in December: the last that ended
            first, after, end_first, end_after = _days_from(start, end, year - 1)
    except ValueError:  # 30 February
        return None
    return min(first, end_first), max(after, end_after)


def _days_from(start: _End, end: _End, year: int) -> tuple[date, date, date, date]:
    """Each end's first day and the day after its last, from ``start`` in ``year``."""
    first, after = start.in_year(year)
    end_first, end_after = end.in_year(year)
    if end.year_said is None and end_first < first:  # "from November to February"
        end_first, end_after = end.in_year(year + 1)
    return first, after, end_first, end_after


def _day_said(said: str, today: date) -> date | None:
    """The day ``said`` names ("3 November", "Nov 3rd 2025"): in the year it names, else
    the latest by today; None for no such day (30 February)."""
    end = _End.read(said, today)
    if end is None or end.month is None or end.day is None:
        return None
    try:
        if end.year is not None:
            return date(end.year, end.month, end.day)
        day = date(today.year, end.month, end.day)
        return day if day <= today else date(today.year - 1, end.month, end.day)
    except ValueError:
        return None


def _latest(month: int, today: date, over: bool = False) -> date:
    """The first day of the latest ``month`` begun by ``today``; ``over``: ended by then
    ("last March", asked in March, is a year ago)."""
    return date(today.year - (month > today.month or (over and month == today.month)), month, 1)


def _iso_day(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:  # 2026-13-45
        return None


def _next_month(first: date) -> date:
    return (first + timedelta(days=32)).replace(day=1)


def _previous_month(first: date) -> date:
    return (first - timedelta(days=1)).replace(day=1)


def _start_of(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), zone)


# Words that never name a client on their own, however a client's name begins.
COMMON = frozenset(
    """the a an and new my our your this that their his her its old big little good best
    first last next one two three four five mr mrs ms dr""".split()
)
# Entity kinds a name's first word alone may stand for ("Acme" for "Acme Bakery").
BY_FIRST_WORD = ("client", "project")
# A day's name is a time, as "Today" is ("between Monday and Today"), never a name.
NOT_NAMES = (
    frozenset(calendar.day_name)
    | frozenset(calendar.day_abbr)
    | frozenset(("Today", "Yesterday", "Tomorrow"))
)
NAMES_LOOKED_UP = 3  # at most, a question
MENTIONS_LOOKED_AT = 10  # the records holding each word of a name that are read for it whole


def _as_said(entity: str) -> str:
    """How a text names ``entity``: by its name ("Acme Bakery"), or, for a bare number or
    a name under three characters, after its kind ("invoice 7", never a lone "7");
    empty for an entity of no name."""
    kind, _, name = entity.partition(":")
    name = name.strip()
    return f"{kind} {name}" if name and (name.isdigit() or len(name) < 3) else name


class KnownEntities:
    """The entities runs were about, and which one a text names: in full, whatever its
    case and the punctuation between its words ("Acme Bakery", "acme bakery", "INV 7"),
    or by a first word no other one shares and no other name follows ("Acme", not "Acme
    Ltd"). A bare number or a name under three characters counts only after its kind
    ("invoice 7")."""

    def __init__(self, entities: list[str]) -> None:
        self.entities = entities
        full: dict[str, str] = {}
        for entity in entities:
            if name := _folded(_as_said(entity)):
                full.setdefault(name, entity)
        by_first: dict[str, dict[str, str]] = {}  # a first word -> each name it begins
        for entity in entities:
            kind, _, name = entity.partition(":")
            words = _folded(name).split()
            first = words[0] if len(words) > 1 else ""
            plain = len(first) >= 4 and first.isalpha() and first not in COMMON
            if kind in BY_FIRST_WORD and plain:  # "Acme Corp" and "acme corp" are one name
                by_first.setdefault(first, {}).setdefault(f"{kind}:{_folded(name)}", entity)
        self._full = full
        self._first = {
            word: next(iter(names.values())) for word, names in by_first.items() if len(names) == 1
        }
        self._full_pattern = _alternation(full)
        self._first_pattern = _alternation(self._first, alone=True)
        firsts = "|".join(re.escape(word) for word in sorted(by_first, key=len, reverse=True))
        self._formed_pattern = re.compile(
            rf"(?<!\w)((?:{firsts or '(?!)'})[^\S\n]+(?:{'|'.join(FORMS)}))\b", re.I
        )

    def spellings(self, entity: str | None) -> tuple[str, ...]:
        """``entity`` each way its name was typed ("client:Acme Corp", "client:acme corp")."""
        if entity is None:
            return ()
        return tuple(e for e in self.entities if _same(e, entity)) or (entity,)

    def named(self, text: str) -> str | None:
        """The one entity ``text`` is about: the longest name it gives in full, else the
        one first word it gives; None when it names none, or two by first words only."""
        found = {_folded(m) for m in self._full_pattern.findall(text)} if self._full else set()
        if found:
            return self._full[max(found, key=len)]
        firsts = {m.lower() for m in self._first_pattern.findall(text)} if self._first else set()
        return self._first[firsts.pop()] if len(firsts) == 1 else None

    def formed(self, text: str) -> list[str]:
        """Company names ``text`` gives in any case as a client's first word and a form
        ("acme ltd", beside Acme Corp): another company, whatever its case."""
        return [match.group(1) for match in self._formed_pattern.finditer(text)]

    def alike(self, name: str) -> list[str]:
        """The names of the clients and projects whose first word is ``name``'s ("Acme
        Corp", for "Acme Ltd"), each once however it was typed."""
        first = _folded(name).split()[:1]
        alike: dict[str, str] = {}
        for entity in self.entities:
            kind, _, named = entity.partition(":")
            if kind in BY_FIRST_WORD and _folded(named).split()[:1] == first:
                alike.setdefault(_folded(named), named.strip())
        return [said for folded, said in alike.items() if folded != _folded(name)]

    def all_named(self, text: str) -> list[str]:
        """Every entity ``text`` names, in full or by its first word ("what did we quote
        Globex and Initech?"), in the order it names them."""
        full = list(self._full_pattern.finditer(text)) if self._full else []
        taken = [match.span(1) for match in full]
        entities = [self._full[_folded(match.group(1))] for match in full]
        for match in self._first_pattern.finditer(text) if self._first else []:
            start, end = match.span(1)  # a word of a name given in full names no other
            if not any(start < until and since < end for since, until in taken):
                entities.append(self._first[match.group(1).lower()])
        return list(dict.fromkeys(entities))


# Company forms that make a first word another company's name ("acme ltd"), whatever
# their case; a capitalised word does too ("Acme Holdings").
FORMS = """ltd limited inc incorporated corp corporation llc llp plc gmbh ag co company sa
    sarl bv nv srl spa oy ab pty""".split()
_ANOTHER_NAME = (
    rf"(?![^\S\n]+(?!(?:{_MONTH}|{'|'.join(WEEKDAYS)})\b)(?:(?-i:[A-Z])|(?:{'|'.join(FORMS)})\b))"
)
# Not an acronym ("NDA"), nor "Q3"; "O'Reilly", "D'Angelo" whole.
_CAPITALISED = r"(?:[DO]['\u2019])?[A-Z][a-z][A-Za-z&-]*[a-z]"
# A name: capitalised words, and the company form after them ("Acme Ltd", "Acme ltd.",
# "Northwind Legal"), after a space, a bracket or a quote (not "jane@Globex.io"); one
# word alone only inside a sentence, not at its start ("Globex called. What did we
# quote them?").
_NAME = re.compile(
    rf"(?<![^\s(\"'\u201c\u2018])({_CAPITALISED}(?:[^\S\n]+(?:{_CAPITALISED}|(?i:{'|'.join(FORMS)})\b\.?))*)"
    r"(?:'s)?(?![\w&-])"
)
_SENTENCE_START = re.compile(r"(?:^|[.!?:;])\s*$")
# Capitalised at a sentence's start as any word is: no part of a name after it.
_STARTERS = frozenset(
    """what whats when who whom which why how where whose did didn does doesn do don is
    isn are aren was wasn were weren has hasn have haven had can could would will should
    tell show remind please and but so anything any nothing i we our my the a an this
    that from between since until till after before during last past""".split()
)


def _alternation(names: dict[str, str], alone: bool = False) -> re.Pattern[str]:
    """Finds each of ``names`` (folded) in a text, whatever the punctuation between its
    words; ``alone``: not followed by another name."""
    choices = "|".join(_spelled(name) for name in sorted(names, key=len, reverse=True))
    then = _ANOTHER_NAME if alone else ""
    return re.compile(rf"(?<!\w)({choices or '(?!)'})(?:'s)?(?!\w){then}", re.I)


def _spelled(name: str) -> str:
    """A pattern of ``name``'s words with any punctuation or space between them."""
    return r"[\W_]+".join(re.escape(word) for word in _folded(name).split())


def names_in(question: str) -> list[str]:
    """The names ``question`` gives (``_NAME``), but the months and days in them."""
    names = []
    for match in _NAME.finditer(question):
        words = match.group(1).split()
        if _SENTENCE_START.search(question[: match.start()]):
            if words[0].lower() in _STARTERS:  # "Did Acme Ltd pay?"
                words = words[1:]
            elif len(words) == 1:  # "Globex called."
                continue
        name: list[str] = []
        for word in [*words, ""]:
            if word and word.lower() not in MONTHS and word not in NOT_NAMES:
                name.append(word)
            elif name:
                names.append(" ".join(name).rstrip("."))
                name = []
    return list(dict.fromkeys(names))


class Entities:
    """The entities the ledger knows, read again at most once a minute."""

    def __init__(self, ledger: Ledger, ttl_seconds: float = 60.0) -> None:
        self.ledger = ledger
        self.ttl_seconds = ttl_seconds
        self._read_at = float("-inf")
        self._known = KnownEntities([])

    async def known(self) -> KnownEntities:
        if _monotonic() - self._read_at > self.ttl_seconds:
            self._known = KnownEntities(await self.ledger.entities())
            self._read_at = _monotonic()
        return self._known

    def forget(self) -> None:
        """The next ``known()`` reads the ledger again."""
        self._read_at = float("-inf")


@dataclass(frozen=True)
class Found:
    hits: list[Hit]
    # False: no word of the question was found; these are the latest of the time it names.
    matched: bool = True
    # Names the question gives that nothing remembered mentions ("Hooli", "Acme Ltd"):
    # whatever was found is about something else.
    unknown: tuple[str, ...] = ()
    # Known clients whose names begin as one of those does ("Acme Corp", for "Acme Ltd").
    alike: tuple[str, ...] = ()

    @property
    def unknown_note(self) -> str:
        if not self.unknown:
            return ""
        alike = f" (I know of {' and '.join(self.alike)})" if self.alike else ""
        return f"Nothing I have mentions {' or '.join(self.unknown)}{alike}."


# Words that ask what happened and name nothing to look for ("what happened today?").
_VAGUE = frozenset(
    """a an and anything any did do done else far go going happen happened happening
    has have is it new news on so the there up was we what whats what's""".split()
)


def _of_a_time_alone(words: str) -> bool:
    """Whether a question, its time taken out, asks only what happened then."""
    return all(word in _VAGUE for word in re.findall(r"[^\W_]+(?:'[a-z]+)?", words.lower()))


def _may_be_about(record: MemoryRecord, entity: str) -> bool:
    """Whether ``record`` may be about ``entity``: tagged with no such thing (a client,
    for a client), or with it, however its name was typed ("acme corp"); or its text
    names it (a note on a new client, said while the chat was on another one)."""
    tag = record.entity
    if tag is None or tag.partition(":")[0] != entity.partition(":")[0] or _same(tag, entity):
        return True
    name = _folded(_as_said(entity))
    said = rf"(?<!\w){_spelled(name)}(?!\w)"
    return bool(name) and re.search(said, record.text, re.I) is not None


def _same(entity: str, other: str) -> bool:
    """One entity, its name typed two ways: "client:Acme Corp" and "client:acme  corp."."""
    kind, _, name = entity.partition(":")
    other_kind, _, other_name = other.partition(":")
    return kind == other_kind and _folded(name) == _folded(other_name)


def _folded(name: str) -> str:
    """``name``'s words in lower case, one space between them, whatever was there."""
    return " ".join(re.findall(r"[^\W_]+", name.casefold()))


@dataclass
class History:
    ledger: Ledger
    store: LongTermMemory
    sync: MemorySync
    entities: Entities
    embedder: Embedder | None = None
    models: LanguageModels | None = None
    zone: ZoneInfo = UTC
    _keywords_only: bool = field(default=False, init=False, repr=False)

    async def search(self, question: str, now: datetime, limit: int = SOURCES) -> Found:
        """The records that best answer ``question``, within the filters it gives.

        A client's filter is widened when it leaves too few records, to those about no
        client: not every message about a client names it. A question whose words find
        nothing in the time it names ("what happened yesterday?") gets that time's
        latest records."""
        await self._catch_up()
        known = await self.entities.known()
        filters = read_question(question, now, self.zone, known)
        vector = await self._vector(question)
        meaning = vector is not None or self.store.embeds_queries
        alpha = ALPHA if meaning else 0.0
        words = search_words(question)
        query = Query(words, vector, filters, limit, alpha)
        hits = await self.store.search(query)
        if filters.entities and len(hits) < limit:
            wider = replace(query, filters=replace(filters, entities=()), limit=limit * WIDER)
            seen = {hit.record.id for hit in hits}
            hits += [
                hit
                for hit in await self.store.search(wider)
                if hit.record.id not in seen
                and any(_may_be_about(hit.record, about) for about in filters.entities)
            ]
        unknown = await self._unknown_names(question, filters, known)
        alike = tuple(dict.fromkeys(name for said in unknown for name in known.alike(said)))
        timed = filters.since or filters.until
        if timed and not filters.entities and _of_a_time_alone(words):
            hits = []  # meaning finds the nearest records, however far: not what was asked
        if not hits and timed:
            latest = await self.store.latest(filters, limit)
            return Found([Hit(record, 0.0) for record in latest], False, unknown, alike)
        return Found(hits[:limit], unknown=unknown, alike=alike)

    async def _vector(self, question: str) -> Vector | None:
        """The question's vector; None, for keywords alone, when the embedder fails or
        takes over EMBED_QUERY_SECONDS. Said once until it answers again."""
        if self.embedder is None:
            return None
        try:
            vector = await asyncio.wait_for(
                self.embedder.embed_query(question), EMBED_QUERY_SECONDS
            )
        except TimeoutError:
            self._searching_by_keywords(f"{self.embedder.name} took over {EMBED_QUERY_SECONDS:g} s")
            return None
        except EmbeddingFailed as exc:
            self._searching_by_keywords(str(exc))
            return None
        if self._keywords_only:
            log.warning("searching by meaning again (%s answers)", self.embedder.name)
            self._keywords_only = False
        return vector

    def _searching_by_keywords(self, reason: str) -> None:
        if not self._keywords_only:
            log.warning("searching by keywords only: %s", reason)
        self._keywords_only = True

    async def _unknown_names(
        self, question: str, filters: Filters, known: KnownEntities
    ) -> tuple[str, ...]:
        """The names in ``question`` (``names_in``, and another company's named as a
        client's begins, ``formed``), not a known client's it names, that no record
        mentions."""
        named = {word for e in filters.entities for word in _folded(entity_name(e)).split()}
        names = {_folded(name): name for name in [*names_in(question), *known.formed(question)]}
        unknown: list[str] = []
        for name in names.values():
            if set(_folded(name).split()) <= named:
                continue
            if len(unknown) == NAMES_LOOKED_UP:
                break
            if not await self._mentioned(name):
                unknown.append(name)
        return tuple(unknown)

    async def _mentioned(self, name: str) -> bool:
        """Whether a record mentions ``name``: its word found, or, for a name of more
        words ("Acme Ltd"), all of them as one name, not "Acme" of "Acme Corp" alone, in
        a record holding each of them (of those holding any, many may hold one)."""
        query = Query(name, None, Filters(), MENTIONS_LOOKED_AT, 0.0, every_word=True)
        hits = await self.store.search(query)
        if len(name.split()) == 1:
            return bool(hits)
        said = re.compile(rf"(?<!\w){_spelled(name)}(?!\w)", re.I)
        return any(
            said.search(hit.record.text) or said.search(entity_name(hit.record.entity or ""))
            for hit in hits
        )

    async def _catch_up(self) -> None:
        """Feeds the store what is new before a search, for a while at most: an answer
        from what the store holds beats none (the feeder keeps trying)."""
        try:
            await asyncio.wait_for(self.sync.catch_up(), CATCH_UP_SECONDS)
        except TimeoutError:
            log.warning("searching before long-term memory caught up (%s s)", CATCH_UP_SECONDS)
        except MemoryUnavailable:
            raise
        except Exception:
            log.exception("could not feed long-term memory before a search")

    async def answer(
        self,
        question: str,
        now: datetime,
        recent: list[dict[str, Any]] | None = None,
        limit: int = SOURCES,
    ) -> str:
        question = question.strip()
        if not question:
            return "Ask me about anything that happened, e.g. /history what did we quote Acme?"
        try:
            found = await self.search(question, now, limit)
        except MemoryUnavailable as exc:
            return UNAVAILABLE.format(exc)
        if not found.hits:
            return found.unknown_note or NOTHING
        return await self.compose(question, found, now, recent)

    async def compose(
        self,
        question: str,
        found: Found,
        now: datetime,
        recent: list[dict[str, Any]] | None = None,
    ) -> str:
        """A short answer citing the records found by number, with a model; the records,
        without."""
        hits = found.hits
        sources = "\n".join(self.cite(number, hit) for number, hit in enumerate(hits, 1))
        note = f"{found.unknown_note} " if found.unknown else ""
        unanswered = ""
        if self.models is not None:
            try:
                said = await self._compose(question, hits, now, recent or [])
                _check_answer(said, len(hits))
                return f"{note}{said}\n\nSources:\n{sources}"
            except BudgetExceeded as exc:  # the operator hears why the model did not answer
                unanswered = f" (no model answer: {exc.spent})"
            except ModelUnusable as exc:  # and what to fix
                unanswered = f" (no model answer: {exc})"
            except Exception as exc:  # the records still answer
                log.warning("answering from records only: %s", exc or type(exc).__name__)
        if found.unknown:
            heading = f"{found.unknown_note} The closest records"
        elif found.matched:
            heading = "Best matching records"
        else:
            heading = "The latest records of that time"
        return f"{heading}{unanswered}:\n{sources}"

    async def _compose(
        self, question: str, hits: list[Hit], now: datetime, recent: list[dict[str, Any]]
    ) -> str:
        assert self.models is not None
        chat = "\n".join(f"{turn['who']}: {turn['text'][:500]}" for turn in recent)
        context = f"The conversation so far:\n{_block(chat)}\n\n" if chat else ""
        numbered = "\n".join(
            f"[{n}] {self._when(hit)} · {hit.record.actor or 'steward'}"
            f"{' · run ' + hit.record.run_id if hit.record.run_id else ''}: "
            f"{cut(hit.record.text, RECORD_CHARS)}"
            for n, hit in enumerate(hits, 1)
        )
        prompt = (
            f"Today is {now.astimezone(self.zone):%A %d %B %Y}. Answer the operator's question "
            "from these records of their business only, in at most three sentences. Cite "
            "each fact's record as [n]. If the records do not say, answer that you do not "
            f"know.\n\nRecords:\n{_block(numbered)}\n\n{context}"
            f"Question: {as_data(question)}"
        )
        return await self.models.complete(prompt, purpose=HISTORY_PURPOSE, within=ANSWER_SECONDS)

    def cite(self, number: int, hit: Hit) -> str:
        record = hit.record
        where = f"run {record.run_id}" if record.run_id else record.kind.value
        who = record.actor or "steward"
        text = cut(" ".join(record.text.split()), 220)
        return f"[{number}] {self._when(hit)} · {where} · {who}: {text}"

    def _when(self, hit: Hit) -> str:
        return f"{hit.record.at.astimezone(self.zone):%Y-%m-%d %H:%M %Z}"


def _block(lines: str) -> str:
    """``lines`` fenced as data, each tag on a line of its own."""
    return as_data(f"\n{lines}\n")


def _check_answer(answer: str, sources: int) -> None:
    """Raises ValueError when ``answer`` says nothing, runs past ANSWER_CHARS, or cites a
    source that is not among the ``sources`` listed: a fact said to come from a record
    that is not there may come from nowhere."""
    if not answer:
        raise ValueError("the model answered nothing")
    if len(answer) > ANSWER_CHARS:
        raise ValueError(f"the model answered {len(answer):,} characters")
    for citation in _CITATION.finditer(answer):
        cited = [int(n) for n in re.findall(r"\d+", citation.group(1))]
        if any(not 1 <= n <= sources for n in cited):
            raise ValueError(f"the answer cites {citation.group(0)}, of {sources} sources")
