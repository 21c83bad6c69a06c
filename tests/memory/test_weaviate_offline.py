"""What the Weaviate backend can show without a server: the filters it would send, the
URLs it accepts, and that an unreachable server fails fast and says where to look."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from weaviate.classes.config import Tokenization
from weaviate.collections.classes.grpc import BM25OperatorAnd
from weaviate.collections.filters import _FilterToGRPC, _FilterToREST
from weaviate.exceptions import WeaviateBaseError

from memory.longterm.records import Filters, MemoryRecord, Query, RecordKind
from memory.longterm.store import MemoryUnavailable
from memory.longterm.weaviate import (
    WeaviateAddress,
    WeaviateMemory,
    _properties,
    _properties_of,
    to_weaviate_filter,
)

SINCE = datetime(2025, 3, 1, tzinfo=UTC)
UNTIL = datetime(2025, 4, 1)  # naive: taken as UTC

COMBINATIONS = [
    Filters(kinds=kinds, entities=entities, run_id=run_id, since=since, until=until)
    for kinds, entities, run_id, since, until in itertools.product(
        [(), (RecordKind.DECISION,), (RecordKind.MESSAGE, RecordKind.REPLY)],
        [(), ("client:Acme Bakery",), ("client:Acme Bakery", "client:acme bakery")],
        [None, "run-7"],
        [None, SINCE],
        [None, UNTIL],
    )
]


def _conditions(rest: dict[str, Any]) -> list[dict[str, Any]]:
    if rest["operator"] == "And":
        return [leaf for operand in rest["operands"] for leaf in _conditions(operand)]
    return [rest]


def _expected(filters: Filters) -> list[dict[str, Any]]:
    expected: list[dict[str, Any]] = []
    if filters.kinds:
        values = [kind.value for kind in filters.kinds]
        expected.append({"path": ["kind"], "operator": "ContainsAny", "valueTextArray": values})
    if filters.entities:
        values = list(filters.entities)
        expected.append({"path": ["entity"], "operator": "ContainsAny", "valueTextArray": values})
    if filters.run_id is not None:
        expected.append({"path": ["run_id"], "operator": "Equal", "valueText": filters.run_id})
    if filters.since is not None:
        expected.append(
            {
                "path": ["at"],
                "operator": "GreaterThanEqual",
                "valueDate": "2025-03-01T00:00:00.000000+00:00",
            }
        )
    if filters.until is not None:
        expected.append(
            {
                "path": ["at"],
                "operator": "LessThan",
                "valueDate": "2025-04-01T00:00:00.000000+00:00",
            }
        )
    return expected


@pytest.mark.parametrize("filters", COMBINATIONS)
def test_filters_become_valid_weaviate_filters(filters: Filters) -> None:
    weaviate_filter = to_weaviate_filter(filters)

    if filters.empty:
        assert weaviate_filter is None
        return
    assert weaviate_filter is not None
    # Both wire forms the client sends (gRPC for queries, REST for batch deletes) accept it.
    assert _FilterToGRPC.convert(weaviate_filter) is not None
    rest = _FilterToREST.convert(weaviate_filter)
    conditions = _conditions(rest)
    assert conditions == _expected(filters)
    assert rest["operator"] == ("And" if len(conditions) > 1 else conditions[0]["operator"])


def test_address_from_url() -> None:
    local = WeaviateAddress.parse("http://weaviate:8080")
    cloud = WeaviateAddress.parse("https://abc.weaviate.cloud?grpc=grpc-abc.weaviate.cloud:443")
    other_grpc = WeaviateAddress.parse("http://127.0.0.1:8081?grpc=50052")

    assert local == WeaviateAddress("weaviate", 8080, False, "weaviate", 50051)
    assert cloud == WeaviateAddress("abc.weaviate.cloud", 443, True, "grpc-abc.weaviate.cloud", 443)
    assert other_grpc == WeaviateAddress("127.0.0.1", 8081, False, "127.0.0.1", 50052)
    assert str(local) == "weaviate:8080"


@pytest.mark.parametrize("url", ["weaviate:8080", "ftp://weaviate", "http://weaviate:http"])
def test_a_bad_url_names_the_setting(url: str) -> None:
    with pytest.raises(ValueError, match="STEWARD_WEAVIATE_URL"):
        WeaviateAddress.parse(url)


async def test_an_unknown_vectorizer_is_refused_before_connecting() -> None:
    with pytest.raises(ValueError, match="text2vec-openai"):
        await WeaviateMemory.connect("http://127.0.0.1:9", None, vectorizer="text2vec-nonsense")


async def test_connect_to_a_closed_port_fails_fast_without_the_key() -> None:
    started = time.monotonic()

    with pytest.raises(MemoryUnavailable) as raised:
        await WeaviateMemory.connect("http://127.0.0.1:9", "sekrit-api-key-123")

    assert time.monotonic() - started < 10
    message = str(raised.value)
    assert "127.0.0.1:9" in message
    assert "STEWARD_WEAVIATE_URL" in message
    assert "sekrit-api-key-123" not in message


async def test_a_server_that_never_answers_is_said_to_be_silent() -> None:
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # takes the connection, answers nothing

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    started = time.monotonic()
    async with server:
        with pytest.raises(MemoryUnavailable) as raised:
            await WeaviateMemory.connect(f"http://127.0.0.1:{port}", None)
        for writer in held:
            writer.close()
            await writer.wait_closed()

    assert time.monotonic() - started < 12
    assert str(raised.value) == (
        f"cannot reach Weaviate at 127.0.0.1:{port}: it took the connection but did not "
        "answer in time (check STEWARD_WEAVIATE_URL)"
    )


def test_a_record_in_a_script_written_without_spaces_keeps_its_words_in_pairs() -> None:
    """Weaviate's word tokenizer kept "我们给Acme的报价" as one word; the words it is
    searched by are its pairs (and its Latin words), in a property of their own that
    nothing embeds. A record of no such script has none."""
    chinese = MemoryRecord.create("test:1", RecordKind.NOTE, "我们给Acme的报价", SINCE)
    latin = MemoryRecord.create("test:2", RecordKind.NOTE, "the quote for Acme", SINCE)

    assert _properties_of(chinese)["words"] == "我们 们给 acme 的报 报价"
    korean = MemoryRecord.create("test:3", RecordKind.NOTE, "아크미에게 견적서를", SINCE)  # to Acme
    assert _properties_of(korean)["words"] == "아크 크미 미에 에게 견적 적서 서를"
    assert "words" not in _properties_of(latin)
    [words] = [prop for prop in _properties() if prop.name == "words"]
    assert words.tokenization == Tokenization.WHITESPACE
    assert words.skip_vectorization


async def test_a_search_for_every_word_asks_weaviate_for_every_word() -> None:
    """Whether "Acme Ltd" is mentioned asks for the records holding both words (BM25's
    and-operator); any other search, for those holding any."""
    asked: list[dict[str, Any]] = []

    async def hybrid(**kwargs: Any) -> Any:
        asked.append(kwargs)
        return SimpleNamespace(objects=[])

    collection = SimpleNamespace(query=SimpleNamespace(hybrid=hybrid))
    client = SimpleNamespace(collections=SimpleNamespace(use=lambda name: collection))
    memory = WeaviateMemory(client)  # type: ignore[arg-type]
    await memory.search(Query("Acme Ltd", limit=10, alpha=0.0, every_word=True))
    await memory.search(Query("Acme Ltd", limit=10, alpha=0.0))
    assert isinstance(asked[0]["bm25_operator"], BM25OperatorAnd)
    assert asked[1]["bm25_operator"] is None


class _UpgradedCollection:
    """A collection made before Korean was read in pairs: its ``words`` property there,
    a Korean record stored then without words, a Chinese one with its pairs."""

    def __init__(self, description: str | None) -> None:
        self.description = description
        self.objects = {
            "ko": {"text": "아크미에게 견적서를 보냈습니다", "words": None},
            "zh": {"text": "我们给Acme的报价", "words": "我们 们给 acme 的报 报价"},
            "en": {"text": "Quoted Acme 1,200", "words": None},
        }
        self.updated: list[str] = []
        self.config = SimpleNamespace(get=self._get, update=self._update)
        self.data = SimpleNamespace(update=self._update_object)

    async def _get(self) -> Any:
        words = SimpleNamespace(name="words", description=None)
        return SimpleNamespace(description=self.description, properties=[words])

    async def _update(self, *, description: str) -> None:
        self.description = description

    async def _update_object(self, uuid: str, properties: dict[str, Any]) -> None:
        self.updated.append(uuid)
        self.objects[uuid].update(properties)

    async def iterator(self, return_properties: list[str]) -> Any:
        for uuid, found in list(self.objects.items()):
            properties = {name: found[name] for name in return_properties}
            yield SimpleNamespace(uuid=uuid, properties=properties)


async def test_a_collection_from_before_korean_was_read_in_pairs_gets_its_words() -> None:
    """Upgraded, a Korean record stored before kept no words, and a Korean question was
    asked by its pairs alone: "아크미" found no record Weaviate held from before, where it
    found one naming 아크미 as a word of its own until then. Its words are given at setup,
    once."""
    collection = _UpgradedCollection(description=None)

    async def exists(name: str) -> bool:
        return True

    client = SimpleNamespace(
        collections=SimpleNamespace(use=lambda name: collection, exists=exists)
    )
    memory = WeaviateMemory(client)  # type: ignore[arg-type]
    await memory.setup()
    assert collection.updated == ["ko"]
    words = collection.objects["ko"]["words"]
    assert words == "아크 크미 미에 에게 견적 적서 서를 보냈 냈습 습니 니다"
    await memory.setup()  # the next start reads nothing again
    assert collection.updated == ["ko"]


async def test_a_server_that_cannot_note_the_words_read_still_serves() -> None:
    """A server refusing the collection's new description: the words are given all the
    same, and memory works; the next start gives them again."""
    collection = _UpgradedCollection(description=None)

    async def refuse(*, description: str) -> None:
        raise WeaviateBaseError("refused")

    async def exists(name: str) -> bool:
        return True

    collection.config.update = refuse
    client = SimpleNamespace(
        collections=SimpleNamespace(use=lambda name: collection, exists=exists)
    )
    memory = WeaviateMemory(client)  # type: ignore[arg-type]
    await memory.setup()
    await memory.setup()
    assert collection.updated == ["ko"]  # the second time, it already had them
