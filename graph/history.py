"""Answers about history: "what did we quote Acme in March?"

The question gives the filters — a time ("last week", "in March", "yesterday") and the
known clients it names — then long-term memory finds the records by keywords and
meaning. With a model the answer is a few sentences citing its sources by number; with
none, or when the model fails, it is the best matching records, each cited.
"""

from __future__ import annotations

import calendar
import logging
import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from graph.models import LanguageModels
from graph.remembering import entity_name
from memory.embeddings import Embedder, EmbeddingFailed
from memory.ledger import Ledger
from memory.longterm import Filters, Hit, LongTermMemory, MemoryUnavailable, Query
from memory.longterm.sync import MemorySync

log = logging.getLogger(__name__)

UTC = ZoneInfo("UTC")
SOURCES = 8  # records an answer draws on
ALPHA = 0.5  # hybrid weight of meaning against keywords (0: keywords only)
NOTHING = "I found nothing about that in my memory."
UNAVAILABLE = "My long-term memory is not available right now ({}). Try again soon."

MONTHS = {name.lower(): number for number, name in enumerate(calendar.month_name) if name}
MONTHS |= {name.lower(): number for number, name in enumerate(calendar.month_abbr) if name}
_MONTH = "|".join(sorted(MONTHS, key=len, reverse=True))
_IN_MONTH = re.compile(rf"\b(?:in|during|from|of)\s+({_MONTH})\b\.?(?:\s+(\d{{4}}))?", re.I)
_LAST_DAYS = re.compile(r"\b(?:last|past)\s+(\d{1,3})\s+(day|week|month)s?\b", re.I)
_QUESTION_WORDS = re.compile(
    r"^(what|what's|when|who|whom|which|why|how|did|didn't|remind me|tell me|show me)\b",
    re.I,
)


@dataclass(frozen=True)
class Reading:
    """What a question asks, once its filters are taken out of it."""

    text: str
    filters: Filters = field(default_factory=Filters)
    period: str = ""  # "in March 2026", as understood


def looks_like_a_question(text: str) -> bool:
    stripped = text.strip()
    return stripped.endswith("?") or bool(_QUESTION_WORDS.match(stripped))


def read_question(question: str, now: datetime, zone: ZoneInfo, entities: list[str]) -> Reading:
    """Takes the time and the client out of ``question`` as filters."""
    today = now.astimezone(zone).date()
    since, until, period = _period(question, today)
    filters = Filters(
        since=_start_of(since, zone) if since else None,
        until=_start_of(until, zone) if until else None,
        entity=named_entity(question, entities),
    )
    return Reading(question, filters, period)


def _period(question: str, today: date) -> tuple[date | None, date | None, str]:
    lowered = question.lower()
    monday = today - timedelta(days=today.weekday())
    first = today.replace(day=1)
    if match := _LAST_DAYS.search(lowered):
        count, unit = int(match.group(1)), match.group(2)
        days = count * {"day": 1, "week": 7, "month": 30}[unit]
        return today - timedelta(days=days - 1), today + timedelta(days=1), match.group(0)
    if match := _IN_MONTH.search(lowered):
        month = MONTHS[match.group(1).lower()]
        year = int(match.group(2)) if match.group(2) else today.year
        if not match.group(2) and month > today.month:
            year -= 1  # "in November", asked in March: the last one
        start = date(year, month, 1)
        end = _next_month(start)
        return start, end, f"in {calendar.month_name[month]} {year}"
    phrases: list[tuple[str, date, date]] = [
        ("today", today, today + timedelta(days=1)),
        ("yesterday", today - timedelta(days=1), today),
        ("this week", monday, today + timedelta(days=1)),
        ("last week", monday - timedelta(days=7), monday),
        ("this month", first, today + timedelta(days=1)),
        ("last month", _previous_month(first), first),
        ("this year", date(today.year, 1, 1), today + timedelta(days=1)),
        ("last year", date(today.year - 1, 1, 1), date(today.year, 1, 1)),
    ]
    for phrase, start, end in phrases:
        if re.search(rf"\b{phrase}\b", lowered):
            return start, end, phrase
    return None, None, ""


def _next_month(first: date) -> date:
    return (first + timedelta(days=32)).replace(day=1)


def _previous_month(first: date) -> date:
    return (first - timedelta(days=1)).replace(day=1)


def _start_of(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), zone)


def named_entity(question: str, entities: list[str]) -> str | None:
    """The one known entity the question names: in full ("Acme Bakery"), or by a
    first word no other entity shares ("Acme")."""
    lowered = f" {question.lower()} "
    named = [e for e in entities if _says(lowered, entity_name(e).lower())]
    if len(named) == 1:
        return named[0]
    if named:
        return max(named, key=lambda e: len(entity_name(e)))
    by_first: dict[str, list[str]] = {}
    for entity in entities:
        words = entity_name(entity).lower().split()
        if words and len(words[0]) >= 3:
            by_first.setdefault(words[0], []).append(entity)
    found = [
        group[0] for word, group in by_first.items() if len(group) == 1 and _says(lowered, word)
    ]
    return found[0] if len(found) == 1 else None


def _says(lowered: str, name: str) -> bool:
    return bool(name) and re.search(rf"(?<!\w){re.escape(name)}(?:'s)?(?!\w)", lowered) is not None


@dataclass
class History:
    ledger: Ledger
    store: LongTermMemory
    sync: MemorySync
    embedder: Embedder | None = None
    models: LanguageModels | None = None
    zone: ZoneInfo = UTC

    async def search(self, question: str, now: datetime, limit: int = SOURCES) -> list[Hit]:
        """The records that best answer ``question``, within the filters it gives. A
        client's filter is widened when it leaves too few records: not every message
        about a client names it."""
        await self.sync.catch_up()
        reading = read_question(question, now, self.zone, await self.ledger.journal_entities())
        vector = None
        if self.embedder is not None:
            try:
                vector = await self.embedder.embed_query(question)
            except EmbeddingFailed as exc:
                log.warning("searching by keywords only: %s", exc)
        query = Query(question, vector, reading.filters, limit, ALPHA if vector else 0.0)
        hits = await self.store.search(query)
        if reading.filters.entity is not None and len(hits) < limit:
            wider = replace(query, filters=replace(reading.filters, entity=None))
            seen = {hit.record.id for hit in hits}
            hits += [h for h in await self.store.search(wider) if h.record.id not in seen]
        return hits[:limit]

    async def answer(
        self, question: str, now: datetime, recent: list[dict[str, Any]] | None = None
    ) -> str:
        question = question.strip()
        if not question:
            return "Ask me about anything that happened, e.g. /history what did we quote Acme?"
        try:
            hits = await self.search(question, now)
        except MemoryUnavailable as exc:
            return UNAVAILABLE.format(exc)
        return await self.compose(question, hits, now, recent) if hits else NOTHING

    async def compose(
        self,
        question: str,
        hits: list[Hit],
        now: datetime,
        recent: list[dict[str, Any]] | None = None,
    ) -> str:
        """A short answer citing ``hits`` by number, with a model; the hits, without."""
        sources = "\n".join(self.cite(number, hit) for number, hit in enumerate(hits, 1))
        if self.models is not None:
            try:
                said = await self._compose(question, hits, now, recent or [])
                return f"{said}\n\nSources:\n{sources}"
            except Exception as exc:  # the records still answer
                log.warning("answering from records only: %s", exc)
        return f"Best matching records:\n{sources}"

    async def _compose(
        self, question: str, hits: list[Hit], now: datetime, recent: list[dict[str, Any]]
    ) -> str:
        assert self.models is not None
        chat = "\n".join(f"{turn['who']}: {turn['text'][:500]}" for turn in recent)
        context = f"The conversation so far:\n<data>\n{chat}\n</data>\n\n" if chat else ""
        numbered = "\n".join(
            f"[{n}] {self._when(hit)} · {hit.record.actor or 'steward'}"
            f"{' · run ' + hit.record.run_id if hit.record.run_id else ''}: {hit.record.text}"
            for n, hit in enumerate(hits, 1)
        )
        prompt = (
            f"Today is {now.astimezone(self.zone):%A %d %B %Y}. Answer the operator's question "
            "from these records of their business only, in at most three sentences. Cite "
            "each fact's record as [n]. If the records do not say, answer that you do not "
            f"know.\n\nRecords:\n<data>\n{numbered}\n</data>\n\n{context}"
            f"Question: <data>{question}</data>"
        )
        return await self.models.complete(prompt, purpose="history")

    def cite(self, number: int, hit: Hit) -> str:
        record = hit.record
        where = f"run {record.run_id}" if record.run_id else record.kind.value
        who = record.actor or "steward"
        text = " ".join(record.text.split())
        text = text if len(text) <= 220 else text[:219] + "…"
        return f"[{number}] {self._when(hit)} · {where} · {who}: {text}"

    def _when(self, hit: Hit) -> str:
        return f"{hit.record.at.astimezone(self.zone):%Y-%m-%d %H:%M}"
