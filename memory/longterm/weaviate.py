"""Long-term memory on a Weaviate server (``STEWARD_WEAVIATE_URL``), through the
weaviate-client v4 async API; the only module that imports ``weaviate``.

One collection holds the records, one object per record, its uuid the record's id, so
a record written again replaces itself (a batch write over an existing uuid replaces
the object). A record in a script written without spaces (Chinese, Japanese, Thai: see
``unspaced``) keeps its words, runs of such letters in pairs, in ``words`` too, which a
question in such a script searches with ``text``; other questions search ``text`` alone,
as before ``words`` was. Vectors are ours (``Configure.Vectors.self_provided``) unless a Weaviate
vectorizer module is named, in which case Weaviate embeds ``text`` itself and this
backend never sends a vector.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import weaviate
from weaviate import WeaviateAsyncClient
from weaviate.classes.config import Configure, DataType, Property, Tokenization
from weaviate.classes.data import DataObject
from weaviate.classes.init import Auth
from weaviate.classes.query import (
    BM25Operator,
    Filter,
    FilterReturn,
    HybridFusion,
    HybridVector,
    MetadataQuery,
    Sort,
)
from weaviate.collections import CollectionAsync
from weaviate.collections.classes.config_vectors import _VectorConfigCreate
from weaviate.exceptions import UnexpectedStatusCodeError, WeaviateBaseError

from memory.longterm.records import Filters, Hit, MemoryRecord, Query, RecordKind
from memory.longterm.store import MemoryUnavailable, Vector, ranking
from memory.longterm.unspaced import WORD, in_pairs

log = logging.getLogger(__name__)

DEFAULT_COLLECTION = "StewardMemory"
DEFAULT_GRPC_PORT = 50051
CONNECT_TIMEOUT = 10.0  # seconds for connect, readiness and schema, all together
BATCH_SIZE = 100  # objects per insert_many / ids per delete_many

# Weaviate vectorizer modules this backend can configure, by module name.
VECTORIZERS = ("text2vec-openai", "text2vec-transformers", "text2vec-ollama")

# The collection's description, once its records' ``words`` are read as ``unspaced`` reads
# them now; changed when that reads another script in pairs (Korean, in version 2), so that
# the records stored before get their words at setup, as the embedded store's keyword
# index is made again (``KEYWORDS_CHANGED``).
WORDS_READ = "steward's long-term memory (words: version 2)"

# Properties only filtered on: matched whole, never searched by keywords, never embedded.
_FIELDS = ("record_id", "kind", "actor", "run_id", "entity", "chat", "source")


@dataclass(frozen=True)
class WeaviateAddress:
    """Where a Weaviate server answers: ``http[s]://HOST[:PORT][?grpc=[GRPC_HOST:]PORT]``.

    The HTTP port defaults to 80 for http and 443 for https; gRPC, which the v4 client
    needs as well, to HOST:50051 over the same security as HTTP. Weaviate Cloud, for
    one, wants ``https://CLUSTER?grpc=grpc-CLUSTER:443``.
    """

    host: str
    port: int
    secure: bool
    grpc_host: str
    grpc_port: int

    @classmethod
    def parse(cls, url: str) -> WeaviateAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"a Weaviate URL is http[s]://HOST[:PORT][?grpc=PORT], not {url!r} "
                "(check STEWARD_WEAVIATE_URL)"
            )
        secure = parts.scheme == "https"
        try:
            port = parts.port or (443 if secure else 80)
            grpc = parse_qs(parts.query).get("grpc", [""])[-1]
            grpc_host, _, grpc_port = grpc.rpartition(":")
            return cls(
                host=parts.hostname,
                port=port,
                secure=secure,
                grpc_host=grpc_host or parts.hostname,
                grpc_port=int(grpc_port) if grpc_port else DEFAULT_GRPC_PORT,
            )
        except ValueError as exc:
            raise ValueError(
                f"bad port in the Weaviate URL {url!r}: {exc} (check STEWARD_WEAVIATE_URL)"
            ) from None

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class WeaviateMemory:
    """The LongTermMemory protocol on one Weaviate collection.

    ``vectorizer`` None means bring-your-own vectors: ``upsert`` stores the vectors it is
    given, and a record without one waits (``embedded`` false) for ``set_vectors``.
    Otherwise it names a Weaviate module (one of ``VECTORIZERS``) that embeds on write
    and on search; the caller's vectors are then ignored. ``address`` (HOST:PORT) goes
    into ``name`` and the error messages; ``connect`` fills it in.
    """

    def __init__(
        self,
        client: WeaviateAsyncClient,
        collection_name: str = DEFAULT_COLLECTION,
        vectorizer: str | None = None,
        *,
        address: str = "",
    ) -> None:
        _check_vectorizer(vectorizer)
        self._client = client
        self._collection_name = collection_name
        self._vectorizer = vectorizer
        self.embeds_queries = vectorizer is not None
        self._where = f"Weaviate at {address}" if address else "Weaviate"
        self.name = f"weaviate:{address}/{collection_name}"  # as weaviate_store_name() says

    @classmethod
    async def connect(
        cls,
        url: str,
        api_key: str | None,
        vectorizer: str | None = None,
        *,
        collection_name: str = DEFAULT_COLLECTION,
        headers: Mapping[str, str] | None = None,
    ) -> WeaviateMemory:
        """Connects to the server at ``url`` (see ``WeaviateAddress``), checks it is ready
        and creates the collection if it is missing. ``headers`` reach the vectorizer
        module, e.g. ``{"X-OpenAI-Api-Key": ...}``.

        Raises MemoryUnavailable when the server does not answer within CONNECT_TIMEOUT.
        """
        where = WeaviateAddress.parse(url)
        _check_vectorizer(vectorizer)
        client = weaviate.use_async_with_custom(
            http_host=where.host,
            http_port=where.port,
            http_secure=where.secure,
            grpc_host=where.grpc_host,
            grpc_port=where.grpc_port,
            grpc_secure=where.secure,
            headers=dict(headers) if headers else None,
            auth_credentials=Auth.api_key(api_key) if api_key else None,
        )
        memory = cls(client, collection_name, vectorizer, address=str(where))
        cause = ""
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await client.connect()
                if await client.is_ready():
                    await memory.setup()
                else:
                    cause = "it is not ready"
        except TimeoutError:
            cause = f"no answer within {CONNECT_TIMEOUT:g} s"
        except (WeaviateBaseError, OSError) as exc:
            cause = _cause(exc, secret=api_key)
        except BaseException:  # MemoryUnavailable from setup() says it already; or cancelled
            await client.close()
            raise
        if cause:
            await client.close()
            raise MemoryUnavailable(
                f"cannot reach Weaviate at {where}: {cause} (check STEWARD_WEAVIATE_URL)"
            )
        return memory

    async def setup(self) -> None:
        """Creates the collection unless it exists."""
        with self._answering("create its collection"):
            if await self._client.collections.exists(self._collection_name):
                await self._add_words()
                return
            await self._client.collections.create(
                self._collection_name,
                description=WORDS_READ,
                properties=_properties(),
                vector_config=_vector_config(self._vectorizer),
            )

    async def _add_words(self) -> None:
        """Gives a collection made before ``words`` was the property, or before its words
        were read as they are now (``WORDS_READ``), and its records in a script written
        without spaces their words (their text, vectors and all else stay as they are):
        a record in Korean stored before was found by none of its words' pairs."""
        config = await self._collection.config.get()
        if config.description == WORDS_READ:
            return
        if not any(prop.name == "words" for prop in config.properties):
            await self._collection.config.add_property(_words_property())
        given = 0
        async for found in self._collection.iterator(return_properties=["text", "words"]):
            words = _words(str(found.properties.get("text") or ""))
            if words and words != found.properties.get("words"):
                await self._collection.data.update(uuid=found.uuid, properties={"words": words})
                given += 1
        try:
            await self._collection.config.update(description=WORDS_READ)
        except WeaviateBaseError as exc:  # the words are given; the next start reads them again
            log.warning("%s could not note its words read: %s", self._where, _cause(exc))
        if given:
            log.info("%s: gave %d records their words as they are read now", self._where, given)

    async def upsert(
        self, records: Sequence[MemoryRecord], vectors: Sequence[Vector | None]
    ) -> None:
        if len(records) != len(vectors):
            raise ValueError(f"{len(records)} records but {len(vectors)} vectors")
        objects = [
            self._object(record, vector) for record, vector in zip(records, vectors, strict=True)
        ]
        with self._answering("store records"):
            for start in range(0, len(objects), BATCH_SIZE):
                result = await self._collection.data.insert_many(
                    objects[start : start + BATCH_SIZE]
                )
                if result.has_errors:
                    first = next(iter(result.errors.values()))
                    raise MemoryUnavailable(
                        f"{self._where} refused {len(result.errors)} of "
                        f"{len(objects)} records: {first.message}"
                    )

    async def search(self, query: Query) -> list[Hit]:
        if query.limit <= 0:
            return []
        # With our own vectors and none for the query, Weaviate must not try to embed
        # the text itself (there is no module to do it): keywords only.
        own_vectors = self._vectorizer is None
        alpha = 0.0 if own_vectors and query.vector is None else query.alpha
        words = _words(query.text)
        vector: Any = query.vector if own_vectors else None
        if words and not own_vectors:  # Weaviate embeds the question, not its pairs
            vector = HybridVector.near_text(query.text)
        with self._answering("search"):
            response = await self._collection.query.hybrid(
                query=words or query.text,
                vector=vector,
                alpha=alpha,
                query_properties=["text", "words"] if words else ["text"],
                fusion_type=HybridFusion.RELATIVE_SCORE,
                bm25_operator=BM25Operator.and_() if query.every_word else None,
                filters=to_weaviate_filter(query.filters),
                limit=query.limit,
                return_metadata=MetadataQuery(score=True),
            )
        hits = [
            Hit(_record(found.properties), found.metadata.score or 0.0)
            for found in response.objects
        ]
        return sorted(hits, key=ranking)[: query.limit]

    async def latest(self, filters: Filters, limit: int) -> list[MemoryRecord]:
        if limit <= 0:
            return []
        with self._answering("list the latest records"):
            response = await self._collection.query.fetch_objects(
                filters=to_weaviate_filter(filters),
                sort=Sort.by_property("at", ascending=False),
                limit=limit,
            )
        return [_record(found.properties) for found in response.objects]

    async def delete(self, ids: Sequence[str]) -> int:
        deleted = 0
        with self._answering("delete records"):
            for start in range(0, len(ids), BATCH_SIZE):
                result = await self._collection.data.delete_many(
                    where=Filter.by_id().contains_any(list(ids[start : start + BATCH_SIZE]))
                )
                deleted += result.successful
        return deleted

    async def count(self, filters: Filters | None = None) -> int:
        with self._answering("count records"):
            result = await self._collection.aggregate.over_all(
                total_count=True, filters=to_weaviate_filter(filters or Filters())
            )
        return result.total_count or 0

    async def unembedded(self, limit: int) -> list[MemoryRecord]:
        if self._vectorizer is not None or limit <= 0:
            return []
        with self._answering("list records without vectors"):
            response = await self._collection.query.fetch_objects(
                filters=Filter.by_property("embedded").equal(False),
                sort=Sort.by_property("at", ascending=True),
                limit=limit,
            )
        return [_record(found.properties) for found in response.objects]

    async def set_vectors(self, vectors: dict[str, Vector]) -> None:
        """Gives stored records their vectors; ids no longer stored are skipped. With a
        Weaviate vectorizer there is nothing to set: Weaviate embedded them on write."""
        if self._vectorizer is not None:
            return
        with self._answering("store vectors"):
            for record_id, vector in vectors.items():
                try:
                    await self._collection.data.update(
                        uuid=record_id, properties={"embedded": True}, vector=vector
                    )
                except UnexpectedStatusCodeError as exc:
                    if exc.status_code != 404:
                        raise

    async def clear(self) -> None:
        with self._answering("delete its collection"):
            await self._client.collections.delete(self._collection_name)
        await self.setup()

    async def warm_up(self) -> None:
        """Nothing to ready: Weaviate holds its indexes itself."""

    async def close(self) -> None:
        await self._client.close()

    @property
    def _collection(self) -> CollectionAsync[Any, Any]:
        return self._client.collections.use(self._collection_name)

    def _object(self, record: MemoryRecord, vector: Vector | None) -> DataObject[Any, Any]:
        own_vector = vector if self._vectorizer is None else None
        properties = _properties_of(record)
        properties["embedded"] = self._vectorizer is not None or own_vector is not None
        return DataObject(uuid=record.id, properties=properties, vector=own_vector)

    @contextmanager
    def _answering(self, action: str) -> Iterator[None]:
        """Turns the client's failures into MemoryUnavailable, so what should be stored
        waits in the ledger."""
        try:
            yield
        except (WeaviateBaseError, OSError) as exc:
            raise MemoryUnavailable(f"{self._where} could not {action}: {_cause(exc)}") from exc


def to_weaviate_filter(filters: Filters) -> FilterReturn | None:
    """The Weaviate filter for ``filters``; None when they leave everything in."""
    parts: list[FilterReturn] = []
    if filters.kinds:
        parts.append(Filter.by_property("kind").contains_any([k.value for k in filters.kinds]))
    if filters.entities:
        parts.append(Filter.by_property("entity").contains_any(list(filters.entities)))
    if filters.run_id is not None:
        parts.append(Filter.by_property("run_id").equal(filters.run_id))
    if filters.since is not None:
        parts.append(Filter.by_property("at").greater_or_equal(_aware(filters.since)))
    if filters.until is not None:
        parts.append(Filter.by_property("at").less_than(_aware(filters.until)))
    return Filter.all_of(parts) if parts else None


def _check_vectorizer(vectorizer: str | None) -> None:
    if vectorizer is not None and vectorizer not in VECTORIZERS:
        raise ValueError(
            f"unknown Weaviate vectorizer {vectorizer!r}; use one of {', '.join(VECTORIZERS)}"
        )


def _properties() -> list[Property]:
    # What a vectorizer embeds is decided by source_properties=["text"] in
    # _vector_config: with vector_config the client does not yet send the per-property
    # skip flags (weaviate/weaviate#9939); they stay here to say the intent.
    fields = [
        Property(
            name=name,
            data_type=DataType.TEXT,
            tokenization=Tokenization.FIELD,
            index_searchable=False,
            skip_vectorization=True,
            vectorize_property_name=False,
        )
        for name in _FIELDS
    ]
    return [
        Property(name="text", data_type=DataType.TEXT, vectorize_property_name=False),
        _words_property(),
        Property(name="at", data_type=DataType.DATE, skip_vectorization=True),
        Property(name="embedded", data_type=DataType.BOOL, skip_vectorization=True),
        *fields,
    ]


def _words_property() -> Property:
    """The words of a text in a script written without spaces, spaced, in lower case."""
    return Property(
        name="words",
        data_type=DataType.TEXT,
        tokenization=Tokenization.WHITESPACE,
        index_filterable=False,
        skip_vectorization=True,
        vectorize_property_name=False,
    )


def _words(text: str) -> str:
    """``text``'s words for ``words``, runs of a script written without spaces in pairs;
    empty for a text of no such run."""
    paired = in_pairs(text)
    return " ".join(WORD.findall(paired.lower())) if paired is not text else ""


def _vector_config(vectorizer: str | None) -> _VectorConfigCreate:
    if vectorizer == "text2vec-openai":
        return Configure.Vectors.text2vec_openai(
            source_properties=["text"], vectorize_collection_name=False
        )
    if vectorizer == "text2vec-transformers":
        return Configure.Vectors.text2vec_transformers(
            source_properties=["text"], vectorize_collection_name=False
        )
    if vectorizer == "text2vec-ollama":
        return Configure.Vectors.text2vec_ollama(
            source_properties=["text"], vectorize_collection_name=False
        )
    config: _VectorConfigCreate = Configure.Vectors.self_provided()
    return config


def _properties_of(record: MemoryRecord) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "record_id": record.id,
        "kind": record.kind.value,
        "text": record.text,
        "words": _words(record.text) or None,
        "at": _aware(record.at),
        "actor": record.actor,
        "run_id": record.run_id,
        "entity": record.entity,
        "chat": record.chat,
        "source": record.source,
    }
    return {name: value for name, value in properties.items() if value is not None}


def _record(properties: Mapping[str, Any]) -> MemoryRecord:
    at = properties["at"]
    at = datetime.fromisoformat(at) if isinstance(at, str) else at
    return MemoryRecord(
        id=properties["record_id"],
        kind=RecordKind(properties["kind"]),
        text=properties.get("text") or "",
        at=_aware(at).astimezone(UTC),
        actor=properties.get("actor") or "",
        run_id=properties.get("run_id"),
        entity=properties.get("entity"),
        chat=properties.get("chat"),
        source=properties.get("source") or "",
    )


def _aware(moment: datetime) -> datetime:
    """Weaviate dates carry a zone; a naive one is taken as UTC, as the records do."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _cause(exc: BaseException, secret: str | None = None) -> str:
    """What went wrong, in one short line without the API key: the network error at
    the bottom of the chain when there is one (the client's own wrapper often says
    only "Connection to Weaviate failed"; a timeout there says nothing at all), else the
    error's first line."""
    shown, link, seen = exc, exc.__cause__ or exc.__context__, {id(exc)}
    while link is not None and id(link) not in seen:
        if isinstance(link, TimeoutError) and not str(link):
            return "it took the connection but did not answer in time"
        if isinstance(link, OSError) and str(link):
            shown = link
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    lines = str(shown).strip().splitlines()
    text = (lines[0] if lines else "") or type(shown).__name__
    if secret:
        text = text.replace(secret, "***")
    return text if len(text) <= 200 else text[:197] + "..."


def weaviate_store_name(url: str, collection_name: str = DEFAULT_COLLECTION) -> str:
    """The ``name`` of the store at ``url``, known before it answers."""
    return f"weaviate:{WeaviateAddress.parse(url)}/{collection_name}"
