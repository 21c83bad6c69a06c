"""The composition root: settings in, a running steward out.

``async with Steward.open(settings) as steward:`` opens the ledger (migrating it),
the checkpointer, the catalog and the connectors, and wires the engine and the
coordinator. Nothing happens at import time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from bot.settings import Settings
from connectors import Connector, ConnectorRegistry, load_user_connectors
from connectors.email import EmailConnector, SmtpServer
from connectors.outbox import OutboxConnector
from connectors.webhook import WebhookConnector
from graph.access import Allowlist
from graph.budget import PRICES, Budgets, parse_prices, parse_process_budgets
from graph.catalog import Catalog
from graph.coordinator import Coordinator
from graph.drafting import Drafter
from graph.effects import EffectGuard, RetryPolicy
from graph.engine import Durability, ProcessEngine
from graph.front_door import FrontDoor
from graph.history import Entities, History
from graph.models import LanguageModels
from graph.remembering import records_for_event
from graph.routing import Router
from memory.checkpoints import open_checkpointer
from memory.embeddings import choose_embedder
from memory.ledger import Ledger, LedgerUnavailable
from memory.longterm import LongTermMemory, MemoryUnavailable
from memory.longterm.embedded import EmbeddedMemory
from memory.longterm.reconnecting import Reconnecting
from memory.longterm.sync import MemorySync
from memory.working import InProcessWorkingMemory, WorkingMemory
from processes import BUILTIN_DIR

log = logging.getLogger(__name__)


@dataclass
class Steward:
    settings: Settings
    ledger: Ledger
    catalog: Catalog
    connectors: ConnectorRegistry
    engine: ProcessEngine
    coordinator: Coordinator
    door: FrontDoor
    history: History

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        settings: Settings,
        *,
        durability: Durability = "exit",
        retry: RetryPolicy | None = None,
        models: LanguageModels | None = None,
    ) -> AsyncIterator[Steward]:
        try:
            settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise LedgerUnavailable(
                f"cannot use {settings.home} as steward's home: {exc.strerror} (check STEWARD_HOME)"
            ) from exc
        _warn_of_data_left_in_home(settings)
        ledger = Ledger.from_url(settings.database)
        try:
            await ledger.setup()
            async with open_checkpointer(ledger) as checkpointer, AsyncExitStack() as stack:
                connectors = ConnectorRegistry()
                connectors.register(OutboxConnector(settings.outbox_dir))
                connectors.register(email_connector(settings))
                connectors.register(WebhookConnector(settings.webhook_secret))
                load_user_connectors(connectors)
                catalog = Catalog.load(
                    BUILTIN_DIR, settings.user_processes_dir, connectors.actions()
                )
                for problem in catalog.problems:  # the CLI says so, once
                    log.info("skipped a process definition: %s", problem)
                budgets = Budgets(
                    ledger,
                    ZoneInfo(settings.timezone),
                    settings.budget_daily,
                    parse_process_budgets(settings.process_budgets),
                    {**PRICES, **parse_prices(settings.model_prices)},
                )
                if models is None and settings.model_configured:
                    assert settings.llm_model is not None
                    models = LanguageModels.openai(
                        ledger,
                        settings.llm_model,
                        settings.llm_fast_model,
                        settings.openai_api_key,
                        settings.openai_base_url,
                        budgets,
                    )
                    stack.push_async_callback(models.close)
                elif models is not None and models.budgets is None:
                    models.budgets = budgets
                engine = ProcessEngine(
                    ledger=ledger,
                    checkpointer=checkpointer,
                    catalog=catalog,
                    effects=EffectGuard(ledger, connectors, retry),
                    drafter=Drafter(models),
                    durability=durability,
                    zone=ZoneInfo(settings.timezone),
                    currency=settings.currency,
                )
                await engine.setup()
                memory = await open_working_memory(settings)
                stack.push_async_callback(memory.close)
                store = await open_long_term_memory(settings)
                stack.push_async_callback(store.close)
                embedder = (
                    None  # Weaviate embeds with its own module
                    if settings.weaviate_url and settings.weaviate_vectorizer
                    else choose_embedder(
                        settings.embedding_model,
                        settings.openai_base_url,
                        settings.openai_api_key,
                        budgets,
                    )
                )
                if embedder is not None:
                    stack.push_async_callback(embedder.close)
                sync = MemorySync(ledger, store, embedder, records_for_event)
                zone = ZoneInfo(settings.timezone)
                entities = Entities(ledger)
                history = History(ledger, store, sync, entities, embedder, models, zone)
                coordinator = Coordinator(
                    ledger=ledger,
                    engine=engine,
                    catalog=catalog,
                    memory=memory,
                    router=Router(catalog, models),
                    zone=zone,
                    budgets=budgets,
                    history=history,
                )
                door = FrontDoor(ledger, Allowlist(settings.operator_ids), memory, coordinator)
                stack.push_async_callback(door.audited)  # before the memory closes
                yield cls(settings, ledger, catalog, connectors, engine, coordinator, door, history)
        finally:
            await ledger.close()


def email_connector(settings: Settings) -> Connector:
    """SMTP when STEWARD_SMTP_URL is set; otherwise each email lands in the outbox."""
    if settings.smtp_url and settings.email_from:
        server = SmtpServer.parse(settings.smtp_url)
        return EmailConnector(server, settings.email_from, settings.timezone)
    log.info("no STEWARD_SMTP_URL: emails are written to %s", settings.outbox_dir)
    return OutboxConnector(
        settings.outbox_dir, "email", EmailConnector.actions, EmailConnector.schemas
    )


async def open_working_memory(settings: Settings) -> WorkingMemory:
    """Redis when STEWARD_REDIS_URL is set (shared by every steward process, kept across
    restarts; in-process while it is down); in-process otherwise."""
    if settings.redis_url:
        from memory.working.redis import Degrading  # only where Redis is configured

        return await Degrading.connect(settings.redis_url)
    return InProcessWorkingMemory()


async def open_long_term_memory(settings: Settings) -> LongTermMemory:
    """Weaviate when STEWARD_WEAVIATE_URL is set; the embedded SQLite store otherwise."""
    url = settings.weaviate_url
    if not url:
        return EmbeddedMemory(settings.home / "memory.db")
    from memory.longterm.weaviate import WeaviateMemory, weaviate_store_name

    def connect() -> Awaitable[WeaviateMemory]:
        return WeaviateMemory.connect(url, settings.weaviate_api_key, settings.weaviate_vectorizer)

    try:
        return await connect()
    except MemoryUnavailable as exc:  # the feeder says so, once, and when it is back
        name = weaviate_store_name(url)
        return Reconnecting(name, connect, exc, embeds_queries=bool(settings.weaviate_vectorizer))


def _warn_of_data_left_in_home(settings: Settings) -> None:
    """Versions before 2026-12 read STEWARD_HOME from HOME by mistake, and kept their
    ledger in the home folder itself: it is not lost, and the operator hears where."""
    left = Path.home() / "steward.db"
    if settings.database_url is None and left.exists() and left != settings.database.sqlite_path:
        log.warning(
            "an earlier steward kept its data in %s (steward.db and the folders beside it); "
            "to go on with it, set STEWARD_HOME=%s or move those files into %s",
            left.parent,
            left.parent,
            settings.home,
        )
