"""The contract of long-term memory, run by every backend: the embedded store always;
Weaviate when STEWARD_TEST_WEAVIATE_URL (default http://localhost:8080) answers."""

from __future__ import annotations

import os
import urllib.request
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from memory.longterm import Filters, LongTermMemory, MemoryRecord, Query, RecordKind, record_id
from memory.longterm.embedded import EmbeddedMemory
from memory.longterm.store import fuse
from tests.fakes.embeddings import hashed

WEAVIATE_URL = os.environ.get("STEWARD_TEST_WEAVIATE_URL", "http://localhost:8080")
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def _weaviate_reason() -> str | None:
    try:
        with urllib.request.urlopen(f"{WEAVIATE_URL}/v1/.well-known/ready", timeout=1) as reply:
            if reply.status == 200:
                return None
            return f"{WEAVIATE_URL} answered {reply.status}, not Weaviate's ready check"
    except OSError as exc:
        return (
            f"no Weaviate server at {WEAVIATE_URL} ({exc}); none can run on these machines — "
            "set STEWARD_TEST_WEAVIATE_URL to run this suite against one"
        )


@pytest.fixture(params=["embedded", "weaviate"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LongTermMemory]:
    if request.param == "embedded":
        memory: LongTermMemory = EmbeddedMemory(tmp_path / "memory.db")
    else:
        reason = _weaviate_reason()
        if reason:
            pytest.skip(reason)
        from memory.longterm.weaviate import WeaviateMemory

        name = f"StewardTest{uuid.uuid4().hex[:10]}"
        memory = await WeaviateMemory.connect(
            WEAVIATE_URL, os.environ.get("STEWARD_TEST_WEAVIATE_API_KEY"), collection_name=name
        )
    try:
        yield memory
    finally:
        await memory.clear()
        await memory.close()


def record(n: int, text: str, **fields: object) -> MemoryRecord:
    at = fields.pop("at", T0 + timedelta(hours=n))
    return MemoryRecord.create(
        f"test:{n}", fields.pop("kind", RecordKind.MESSAGE), text, at, **fields
    )  # type: ignore[arg-type]


async def put(store: LongTermMemory, *records: MemoryRecord, vectors: bool = True) -> None:
    await store.upsert(list(records), [hashed(r.text) if vectors else None for r in records])


def texts(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [hit.record.text for hit in hits]


async def test_a_record_written_twice_is_one_record_with_the_latest_text(
    store: LongTermMemory,
) -> None:
    await put(store, record(1, "quote for Acme: 1,200 EUR"), record(2, "invoice INV-7 sent"))
    await put(store, record(1, "quote for Acme: 1,500 EUR after the scope change"))
    assert await store.count() == 2
    hits = await store.search(Query("quote acme", limit=5))
    assert texts(hits) == ["quote for Acme: 1,500 EUR after the scope change"]
    assert hits[0].record.id == record_id("test:1")


async def test_the_same_record_twice_in_one_write_keeps_the_last(store: LongTermMemory) -> None:
    await put(store, record(1, "alpha"))
    await put(store, record(1, "beta"), record(1, "gamma"), record(2, "delta"))
    assert await store.count() == 2
    assert texts(await store.search(Query("gamma", limit=5))) == ["gamma"]
    assert await store.search(Query("alpha beta", limit=5)) == []


async def test_keywords_find_words_in_other_forms_and_user_text_is_never_syntax(
    store: LongTermMemory,
) -> None:
    await put(store, record(1, "Jane approved the invoices for March"), record(2, "lunch at noon"))
    assert texts(await store.search(Query("invoice approval", limit=5)))[0].startswith("Jane")
    for odd in ["acme AND (", '"unbalanced', "NEAR(a b)", "*", "col:val", "-x", "^", "'; DROP"]:
        await store.search(Query(odd, limit=5))  # no error
    assert await store.search(Query("the of and", limit=5)) == []


async def test_keywords_may_find_only_the_records_holding_every_word(
    store: LongTermMemory,
) -> None:
    """Whether "Acme Ltd" is mentioned: the records holding "acme" or "ltd" alone may be
    many and short, and rank above the one long email that names it."""
    many = [
        record(n, f"Acme Corp quote {n}" if n % 2 else f"Initech Ltd invoice {n}")
        for n in range(12)
    ]
    email = record(99, f"{'we went over the schedule again ' * 20}Acme Ltd wrote back")
    await put(store, *many, email, vectors=False)
    found = await store.search(Query("Acme Ltd", limit=10, alpha=0.0, every_word=True))
    assert texts(found) == [email.text]
    assert await store.search(Query("acme hooli", limit=10, alpha=0.0, every_word=True)) == []


UNSPACED = [
    "我们给Acme公司的报价是三千欧元",  # Chinese: our quote to Acme is 3,000 EUR
    "見積書を山田様に送りました",  # Japanese: sent the quotation to Mr Yamada
    "ลูกค้าชำระเงินค่าใบแจ้งหนี้แล้ว",  # Thai: the client paid the invoice
    "the logo for Globex is ready",
    "아크미에게 견적서를 보냈습니다",  # Korean: sent the quotation to Acme (아크미에게: to Acme)
]


@pytest.mark.parametrize(
    ("question", "found"),
    [
        ("Acme的报价是多少\uff1f", UNSPACED[0]),  # what is Acme's quote? (a full-width "?")
        ("报价", UNSPACED[0]),  # quote
        ("見積書はいつ送りましたか", UNSPACED[1]),  # when was the quotation sent?
        ("山田", UNSPACED[1]),
        ("ใบแจ้งหนี้", UNSPACED[2]),  # invoice
        ("ลูกค้าชำระเงินหรือยัง", UNSPACED[2]),  # has the client paid?
        ("acme", UNSPACED[0]),  # a Latin word in a Chinese sentence
        ("Globex logo", UNSPACED[3]),
        # a Korean word, what is joined to it in the record aside: each found nothing
        ("아크미", UNSPACED[4]),  # Acme
        ("아크미 견적은 언제 보냈나요?", UNSPACED[4]),  # when did we send Acme the quote?
    ],
)
async def test_keywords_find_words_of_scripts_written_without_spaces(
    store: LongTermMemory, question: str, found: str
) -> None:
    """Each sentence in Chinese, Japanese or Thai was one word to the keyword index,
    and a question found nothing in it."""
    await put(store, *(record(n, text) for n, text in enumerate(UNSPACED)), vectors=False)
    assert texts(await store.search(Query(question, limit=5)))[:1] == [found]


async def test_vectors_find_a_record_that_shares_no_word_with_the_question(
    store: LongTermMemory,
) -> None:
    await put(store, record(1, "storefront photos delayed"), record(2, "newsletter draft ready"))
    # A made-up "meaning": the question's vector is the first record's.
    query = Query("why were the shop pictures late", hashed("storefront photos delayed"), alpha=1)
    assert texts(await store.search(query))[0] == "storefront photos delayed"
    assert await store.search(query.keywords_only()) == []


async def test_hybrid_ranks_first_what_both_words_and_meaning_find(store: LongTermMemory) -> None:
    await put(
        store,
        record(1, "Acme paid invoice INV-7"),
        record(2, "Acme asked about the logo"),
        record(3, "Globex paid invoice INV-9"),
    )
    hits = await store.search(Query("Acme paid", hashed("Acme paid invoice INV-7"), alpha=0.5))
    assert texts(hits)[0] == "Acme paid invoice INV-7"
    assert hits[0].score >= hits[-1].score


async def test_filters_on_kind_entity_run_and_time(store: LongTermMemory) -> None:
    await put(
        store,
        record(1, "invoice reminder", kind=RecordKind.ARTIFACT, entity="client:Acme", run_id="r1"),
        record(2, "invoice paid", kind=RecordKind.OUTCOME, entity="client:Acme", run_id="r2"),
        record(3, "invoice disputed", kind=RecordKind.MESSAGE, entity="client:Globex"),
    )
    vector = hashed("invoice")

    async def found(filters: Filters) -> set[str]:
        hits = await store.search(Query("invoice", vector, filters, limit=10))
        return set(texts(hits))

    assert await found(Filters(kinds=(RecordKind.ARTIFACT, RecordKind.OUTCOME))) == {
        "invoice reminder",
        "invoice paid",
    }
    assert await found(Filters(entities=("client:Acme",))) == {"invoice reminder", "invoice paid"}
    either = Filters(entities=("client:Globex", "client:Acme"))
    assert await found(either) == {"invoice reminder", "invoice paid", "invoice disputed"}
    assert await found(Filters(run_id="r2")) == {"invoice paid"}
    # since is inclusive, until exclusive
    window = Filters(since=T0 + timedelta(hours=2), until=T0 + timedelta(hours=3))
    assert await found(window) == {"invoice paid"}
    assert await store.count(Filters(entities=("client:Acme",))) == 2
    assert await store.count(window) == 1


async def test_the_latest_records_within_the_filters_come_newest_first(
    store: LongTermMemory,
) -> None:
    await put(
        store,
        record(1, "quote sent", entity="client:Acme"),
        record(2, "call booked", entity="client:Globex"),
        record(3, "invoice paid", entity="client:Acme"),
        record(4, "newsletter drafted"),
        record(5, "welcome email approved", entity="client:Acme"),
    )
    everything = await store.latest(Filters(), 10)
    assert [r.text for r in everything] == [
        "welcome email approved",
        "newsletter drafted",
        "invoice paid",
        "call booked",
        "quote sent",
    ]
    assert everything[0] == record(5, "welcome email approved", entity="client:Acme")
    window = Filters(since=T0 + timedelta(hours=2), until=T0 + timedelta(hours=5))
    assert [r.text for r in await store.latest(window, 10)] == [
        "newsletter drafted",
        "invoice paid",
        "call booked",
    ]
    acme = await store.latest(Filters(entities=("client:Acme",)), 2)
    assert [r.text for r in acme] == ["welcome email approved", "invoice paid"]
    assert await store.latest(Filters(), 0) == []


async def test_records_come_back_whole_with_times_in_utc(store: LongTermMemory) -> None:
    original = record(
        1,
        "Approved by telegram:42: send the welcome email",
        kind=RecordKind.DECISION,
        actor="telegram:42",
        run_id="r9",
        entity="client:Acme Bakery",
        chat="telegram/42",
    )
    await put(store, original)
    [hit] = await store.search(Query("welcome email", limit=1))
    assert hit.record == original
    assert hit.record.at.utcoffset() == timedelta(0)


async def test_delete_removes_records_from_every_search(store: LongTermMemory) -> None:
    await put(store, record(1, "quote for Acme"), record(2, "quote for Globex"))
    assert await store.delete([record_id("test:1"), record_id("test:404")]) == 1
    assert await store.count() == 1
    assert texts(await store.search(Query("quote acme", hashed("quote for Acme"), alpha=0.5))) == [
        "quote for Globex"
    ]


async def test_a_record_without_a_vector_is_found_by_keywords_then_given_one(
    store: LongTermMemory,
) -> None:
    await put(store, record(1, "storefront photos delayed"), vectors=False)
    [waiting] = await store.unembedded(10)
    assert waiting.id == record_id("test:1")
    assert texts(await store.search(Query("photos", limit=3))) == ["storefront photos delayed"]
    await store.set_vectors({waiting.id: hashed("storefront photos delayed")})
    assert await store.unembedded(10) == []
    query = Query("shop pictures", hashed("storefront photos delayed"), alpha=1)
    assert texts(await store.search(query)) == ["storefront photos delayed"]


async def test_clear_forgets_everything(store: LongTermMemory) -> None:
    await put(store, *(record(n, f"note number {n}") for n in range(30)))
    assert await store.count() == 30
    await store.clear()
    assert await store.count() == 0
    assert await store.search(Query("note", limit=5)) == []


async def test_search_returns_at_most_the_limit_best_first(store: LongTermMemory) -> None:
    await put(store, *(record(n, f"invoice reminder {n}") for n in range(40)))
    await put(store, record(99, "invoice reminder for Acme"))
    query = Query("acme invoice reminder", hashed("invoice reminder for Acme"), limit=7)
    hits = await store.search(query)
    assert len(hits) == 7
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].record.text == "invoice reminder for Acme"


async def test_of_records_found_equally_well_the_newest_comes_first(
    store: LongTermMemory,
) -> None:
    # Written in no order of time, more than nine (ids compared as text put 10 before 9).
    hours = [3, 11, 0, 7, 12, 1, 9, 5, 10, 2, 8, 4, 6]
    await put(
        store,
        *(record(n, "Globex quote", at=T0 + timedelta(hours=h)) for n, h in enumerate(hours)),
        vectors=False,
    )
    hits = await store.search(Query("what was the Globex quote?", None, limit=len(hours)))
    assert [hit.record.at for hit in hits] == [T0 + timedelta(hours=h) for h in range(12, -1, -1)]


# -- the embedded store's own ------------------------------------------------------------


async def test_the_embedded_store_keeps_its_records_across_a_reopen(tmp_path: Path) -> None:
    first = EmbeddedMemory(tmp_path / "memory.db")
    await put(first, record(1, "quote for Acme"))
    await first.close()
    again = EmbeddedMemory(tmp_path / "memory.db")
    try:
        assert texts(await again.search(Query("acme", hashed("quote for Acme")))) == [
            "quote for Acme"
        ]
    finally:
        await again.close()


async def test_vectors_of_another_size_replace_the_old_model_s(tmp_path: Path) -> None:
    memory = EmbeddedMemory(tmp_path / "memory.db")
    try:
        await put(memory, record(1, "quote for Acme"), record(2, "invoice for Globex"))
        await memory.upsert([record(3, "new model")], [hashed("new model", dims=32)])
        # The old model's vectors are dropped: those records wait to be embedded again.
        assert {r.id for r in await memory.unembedded(10)} == {
            record_id("test:1"),
            record_id("test:2"),
        }
        # A question embedded by the old model is answered by keywords.
        assert texts(await memory.search(Query("acme", hashed("acme"), alpha=0.5))) == [
            "quote for Acme"
        ]
    finally:
        await memory.close()


async def test_the_embedded_store_s_limit_keeps_the_newest_of_records_found_equally_well(
    tmp_path: Path,
) -> None:
    store = EmbeddedMemory(tmp_path / "memory.db")
    hours = [3, 11, 0, 7, 12, 1, 9, 5, 10, 2, 8, 4, 6]
    await put(
        store,
        *(record(n, "Globex quote", at=T0 + timedelta(hours=h)) for n, h in enumerate(hours)),
        vectors=False,
    )
    await put(store, record(99, "Globex quote: 1,400 EUR", at=T0))  # found less well
    hits = await store.search(Query("Globex quote", None, limit=3))
    assert [hit.record.at for hit in hits] == [T0 + timedelta(hours=h) for h in (12, 11, 10)]
    await store.close()


async def test_of_more_records_found_equally_well_than_it_weighs_the_newest_are_kept(
    tmp_path: Path,
) -> None:
    """Past the candidates a search weighs (30), ties were cut oldest first."""
    store = EmbeddedMemory(tmp_path / "memory.db")
    days = [T0 + timedelta(days=n) for n in range(40)]
    await put(store, *(record(n, "Globex quote sent", at=at) for n, at in enumerate(days)))
    hits = await store.search(Query("Globex quote", None, limit=3))
    assert [hit.record.at for hit in hits] == days[:-4:-1]
    await store.close()


def test_fusion_orders_equal_scores_by_id_as_numbers() -> None:
    assert [key for key, _ in fuse([("10", 2.0), ("9", 2.0), ("2", 1.0)], [], 0.0)] == [
        "9",
        "10",
        "2",
    ]


async def test_the_embedded_store_finds_a_record_by_the_name_of_what_it_is_about(
    tmp_path: Path,
) -> None:
    memory = EmbeddedMemory(tmp_path / "memory.db")
    try:
        about = record(1, "he signs off on the budget", entity="client:Northwind Legal")
        await put(memory, about, record(2, "budget for the bakery"))
        assert texts(await memory.search(Query("northwind budget")))[0] == about.text
    finally:
        await memory.close()


async def test_a_store_of_an_older_layout_starts_empty(tmp_path: Path) -> None:
    memory = EmbeddedMemory(tmp_path / "memory.db")
    await put(memory, record(1, "quote for Acme"))
    memory._conn.execute("UPDATE meta SET value = '1' WHERE key = 'version'")
    await memory.close()
    again = EmbeddedMemory(tmp_path / "memory.db")  # empty: the sync feeds it again
    try:
        assert await again.count() == 0
        await put(again, record(1, "quote for Acme"))
        assert await again.count() == 1
    finally:
        await again.close()


async def test_a_store_whose_keyword_index_split_no_chinese_is_indexed_again_in_place(
    tmp_path: Path,
) -> None:
    """A store of version 3, whose index kept a Chinese sentence as one word, keeps its
    records and vectors (nothing is embedded again) and finds the words in them."""
    memory = EmbeddedMemory(tmp_path / "memory.db")
    quote, latin = record(1, UNSPACED[0]), record(2, "the logo for Globex is ready")
    await put(memory, quote, latin)
    conn = memory._conn  # as version 3 made it: the text indexed as it is, no marks kept
    conn.execute("DROP TABLE records_fts")
    conn.execute(
        "CREATE VIRTUAL TABLE records_fts USING fts5 (text, entity, content='records', "
        "content_rowid='rowid', tokenize='porter unicode61 remove_diacritics 2')"
    )
    conn.execute(
        "INSERT INTO records_fts (rowid, text, entity) SELECT rowid, text, entity FROM records"
    )
    conn.execute("UPDATE meta SET value = '3' WHERE key = 'version'")
    assert await memory.search(Query("报价")) == []
    await memory.close()
    again = EmbeddedMemory(tmp_path / "memory.db")
    try:
        assert await again.count() == 2
        assert await again.unembedded(10) == []
        assert texts(await again.search(Query("报价"))) == [quote.text]
        assert texts(await again.search(Query("Globex logo"))) == [latin.text]
        await again.delete([quote.id])  # its words come out of the index as they went in
        assert await again.search(Query("报价")) == []
        assert texts(await again.search(Query("x", hashed(latin.text), alpha=1))) == [latin.text]
    finally:
        await again.close()


async def test_a_store_whose_keyword_index_kept_korean_words_whole_is_indexed_again(
    tmp_path: Path,
) -> None:
    """A store of version 4 kept "아크미에게" (to Acme) as one word, and "아크미" found
    nothing in it; opened again, its index is made again in place."""
    memory = EmbeddedMemory(tmp_path / "memory.db")
    quote = record(1, UNSPACED[4])
    await put(memory, quote)
    conn = memory._conn  # as version 4 indexed it: a Korean text as it is
    conn.execute("INSERT INTO records_fts (records_fts) VALUES ('delete-all')")
    conn.execute(
        "INSERT INTO records_fts (rowid, text, entity) SELECT rowid, text, entity FROM records"
    )
    conn.execute("UPDATE meta SET value = '4' WHERE key = 'version'")
    assert await memory.search(Query("아크미")) == []
    await memory.close()
    again = EmbeddedMemory(tmp_path / "memory.db")
    try:
        assert await again.unembedded(10) == []
        assert texts(await again.search(Query("아크미"))) == [quote.text]
    finally:
        await again.close()


async def test_a_failed_write_leaves_the_embedded_store_as_it_was(tmp_path: Path) -> None:
    memory = EmbeddedMemory(tmp_path / "memory.db")
    try:
        await put(memory, record(1, "quote for Acme"))
        # The first vector changes the size (dropping the old ones), the second cannot
        # be stored: the whole write is rolled back, sizes and all.
        with pytest.raises(ValueError, match="multiple of 8"):
            await memory.upsert(
                [record(2, "new size"), record(3, "bad size")],
                [hashed("new size", dims=32), hashed("bad size", dims=12)],
            )
        assert await memory.count() == 1 and await memory.unembedded(5) == []
        await put(memory, record(4, "invoice for Globex"))
        found = await memory.search(Query("globex", hashed("invoice for Globex"), alpha=0.5))
        assert texts(found)[0] == "invoice for Globex"
    finally:
        await memory.close()


async def test_the_embedded_store_sees_what_another_process_wrote(tmp_path: Path) -> None:
    """A long-running process holds the vectors' bits in memory (a one-off question asks
    sqlite-vec); another process's commits are taken in from their log."""
    here = EmbeddedMemory(tmp_path / "memory.db")
    there = EmbeddedMemory(tmp_path / "memory.db")
    nearest = Query("", hashed("invoice for Globex"), alpha=1.0, limit=1)

    async def found() -> list[str]:
        return texts(await here.search(nearest))

    try:
        await put(here, record(1, "quote for Acme"))
        assert await found() == ["quote for Acme"]  # by sqlite-vec
        assert here._signs is None
        await here.warm_up()
        assert await found() == ["quote for Acme"]  # by the bits
        assert here._signs is not None and len(here._signs) == 1
        await put(there, record(2, "invoice for Globex"))
        assert await found() == ["invoice for Globex"]
        await there.delete([record_id("test:2")])
        assert await found() == ["quote for Acme"]
        await put(there, record(2, "invoice for Globex"))
        assert await found() == ["invoice for Globex"]
        await there.clear()  # every vector dropped, then one of the same size again
        await put(there, record(3, "draft for Initech"))
        assert await found() == ["draft for Initech"]
        assert len(here._signs) == 1
        await put(here, record(2, "invoice for Globex"))
        assert await found() == ["invoice for Globex"]
        assert await texts_of(there, nearest) == ["invoice for Globex"]
    finally:
        await here.close()
        await there.close()


async def texts_of(store: LongTermMemory, query: Query) -> list[str]:
    return texts(await store.search(query))


async def test_a_rolled_back_write_leaves_no_vector_behind_in_memory(tmp_path: Path) -> None:
    memory = EmbeddedMemory(tmp_path / "memory.db")
    try:
        await put(memory, record(1, "quote for Acme"), record(2, "invoice for Globex"))
        only_vectors = Query("", hashed("proposal for Initech"), alpha=1.0, limit=5)
        before = texts(await memory.search(only_vectors))
        with pytest.raises(ValueError, match="one vector"):  # fails after the first record
            await memory.upsert(
                [record(3, "proposal for Initech"), record(4, "x")], [hashed("proposal")]
            )
        with pytest.raises(ValueError, match="multiple of 8"):
            await memory.upsert(
                [record(3, "proposal for Initech"), record(4, "bad size")],
                [hashed("proposal for Initech"), hashed("bad size", dims=12)],
            )
        assert texts(await memory.search(only_vectors)) == before
        await memory.delete([record_id("test:1")])
        await put(memory, record(3, "proposal for Initech"))
        assert texts(await memory.search(only_vectors)) == [
            "proposal for Initech",
            "invoice for Globex",
        ]
    finally:
        await memory.close()


async def test_a_rolled_back_write_does_not_hide_another_process_s_next_one(
    tmp_path: Path,
) -> None:
    """A rolled-back write's log entries are given out again (SQLite undoes the
    sequence too): this process must not count them as seen."""
    here = EmbeddedMemory(tmp_path / "memory.db")
    there = EmbeddedMemory(tmp_path / "memory.db")
    try:
        await here.warm_up()
        await put(here, record(1, "quote for Acme"))
        with pytest.raises(ValueError, match="multiple of 8"):
            await here.upsert(
                [record(2, "new"), record(3, "bad size")],
                [hashed("new"), hashed("bad size", dims=12)],
            )
        nearest = Query("", hashed("invoice for Globex"), alpha=1.0, limit=1)
        assert await texts_of(here, nearest) == ["quote for Acme"]
        await here.delete([])  # a write that logs nothing
        await put(there, record(4, "invoice for Globex"))
        assert await texts_of(here, nearest) == ["invoice for Globex"]
    finally:
        await here.close()
        await there.close()
