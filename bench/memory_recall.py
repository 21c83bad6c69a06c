"""Recall of long-term memory on a LoCoMo-format conversation set: keywords, vectors, both.

Each sample's conversation goes into a fresh embedded store (SQLite FTS5 + sqlite-vec),
one record per turn, embedded by the local model. Every question of categories 1–4 with
evidence is asked three ways — keywords only (alpha 0), vectors only (alpha 1), hybrid
(``--alpha``) — and recall@k is the share of its evidence turns found in the top k,
averaged over questions. Keyword-only is the same-run baseline the hybrid must beat.
Targets: hybrid recall@10 ≥ 0.85, and hybrid ≥ keyword-only + 0.10.

A sample may list its ``entities`` (the clients steward would know from its runs, an
addition to the LoCoMo format that other files simply lack); turns are then tagged
with their client as steward tags messages, unless ``--untagged``.

By default the vectors are the local model's: ``uv sync --extra local-embeddings``.
``--embedder configured`` takes the embedding model steward is configured with instead
(STEWARD_EMBEDDING_MODEL with OPENAI_BASE_URL or OPENAI_API_KEY: any OpenAI-compatible
endpoint), to measure another model on the same questions.

    uv run python -m bench.memory_recall [--dataset bench/data/solo_operator.json]
        [--embedder local|configured] [--alpha 0.5] [--alpha-sweep] [--untagged]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.settings import load_settings
from graph.history import KnownEntities
from memory.embeddings import LOCAL, Embedder, Vector, choose_embedder
from memory.longterm.embedded import EmbeddedMemory
from memory.longterm.records import MemoryRecord, Query, RecordKind

DATASET = Path(__file__).parent / "data" / "solo_operator.json"
CATEGORIES = (1, 2, 3, 4)
KS = (5, 10)
BATCH = 64  # turns embedded per call
SWEEP = tuple(round(0.1 * n, 1) for n in range(1, 10))


@dataclass
class Question:
    sample: str
    text: str
    evidence: frozenset[str]
    category: int
    vector: Vector = field(default_factory=list)


@dataclass
class Sample:
    id: str
    records: list[MemoryRecord]
    questions: list[Question]
    dia_ids: dict[str, str]  # record id -> dia_id


@dataclass
class Timings:
    model_load: float = 0.0
    embed_turns: float = 0.0
    embed_questions: float = 0.0
    ingest: float = 0.0
    turns: int = 0


def parse_when(text: str) -> datetime:
    """LoCoMo's session time, e.g. "9:14 am on 3 March, 2026", taken as UTC."""
    return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)


def load(path: Path, tag: bool) -> list[Sample]:
    """One record per turn. With ``tag`` and a sample that lists its ``entities`` (the
    clients steward would know from its runs), each turn is tagged as steward tags an
    operator's message: the client it names, else the one its session was last about."""
    samples: list[Sample] = []
    for raw in json.loads(path.read_text()):
        sample_id = str(raw["sample_id"])
        known = KnownEntities(list(raw.get("entities", [])) if tag else [])
        conversation: dict[str, Any] = raw["conversation"]
        records: list[MemoryRecord] = []
        dia_ids: dict[str, str] = {}
        sessions = sorted(
            (int(key.removeprefix("session_")), turns)
            for key, turns in conversation.items()
            if key.startswith("session_") and isinstance(turns, list)
        )
        for number, turns in sessions:
            at = parse_when(conversation[f"session_{number}_date_time"])
            about: str | None = None
            for turn in turns:
                about = known.named(turn["text"]) or about if known.entities else None
                record = MemoryRecord.create(
                    f"{sample_id}:{turn['dia_id']}",
                    RecordKind.MESSAGE,
                    f"{turn['speaker']}: {turn['text']}",
                    at,
                    actor=turn["speaker"],
                    entity=about,
                )
                records.append(record)
                dia_ids[record.id] = turn["dia_id"]
        questions = [
            Question(sample_id, qa["question"], frozenset(qa["evidence"]), int(qa["category"]))
            for qa in raw["qa"]
            if int(qa["category"]) in CATEGORIES and qa.get("evidence")
        ]
        samples.append(Sample(sample_id, records, questions, dia_ids))
    return samples


async def embed_all(embedder: Embedder, texts: list[str]) -> list[Vector]:
    vectors: list[Vector] = []
    for start in range(0, len(texts), BATCH):
        vectors += await embedder.embed(texts[start : start + BATCH])
    return vectors


async def ingest(sample: Sample, embedder: Embedder, timings: Timings) -> EmbeddedMemory:
    began = time.perf_counter()
    vectors = await embed_all(embedder, [record.indexed_text for record in sample.records])
    turns = time.perf_counter()
    questions = [await embedder.embed_query(question.text) for question in sample.questions]
    asked = time.perf_counter()
    for question, vector in zip(sample.questions, questions, strict=True):
        question.vector = vector
    memory = EmbeddedMemory(":memory:")
    await memory.upsert(sample.records, vectors)
    timings.ingest += time.perf_counter() - asked
    timings.embed_turns += turns - began
    timings.embed_questions += asked - turns
    timings.turns += len(sample.records)
    return memory


def recall(found: list[str], evidence: frozenset[str], k: int) -> float:
    return len(set(found[:k]) & evidence) / len(evidence)


async def ask(
    memory: EmbeddedMemory, sample: Sample, question: Question, alpha: float, vector: bool
) -> list[str]:
    """The dia_ids of the top 10, best first."""
    query = Query(question.text, question.vector if vector else None, limit=max(KS), alpha=alpha)
    hits = await memory.search(query)
    return [sample.dia_ids[hit.record.id] for hit in hits]


Modes = dict[str, tuple[float, bool]]  # name -> (alpha, with a query vector)
Scores = dict[str, dict[int, list[tuple[float, float]]]]  # mode -> category -> (r@5, r@10)


async def evaluate(
    stores: list[tuple[EmbeddedMemory, Sample]], modes: Modes
) -> tuple[Scores, list[float]]:
    scores: Scores = {name: {c: [] for c in CATEGORIES} for name in modes}
    latencies: list[float] = []
    for memory, sample in stores:
        for question in sample.questions:
            for name, (alpha, vector) in modes.items():
                began = time.perf_counter()
                found = await ask(memory, sample, question, alpha, vector)
                latencies.append((time.perf_counter() - began) * 1000)
                five, ten = (recall(found, question.evidence, k) for k in KS)
                scores[name][question.category].append((five, ten))
    return scores, latencies


def mean_at(rows: list[tuple[float, float]], index: int) -> float:
    return statistics.fmean(row[index] for row in rows) if rows else float("nan")


def cell(rows: list[tuple[float, float]]) -> str:
    return f"{mean_at(rows, 0):.2f}/{mean_at(rows, 1):.2f} ({len(rows)})"


def print_table(scores: Scores) -> dict[str, float]:
    """The table; returns each mode's overall recall@10."""
    overall: dict[str, float] = {}
    head = "  ".join(f"{f'cat{c} r@5/r@10 (n)':<18}" for c in CATEGORIES).rstrip()
    print(f"  {'mode':<16}{'recall@5':>9}{'recall@10':>10}{'n':>5}   {head}")
    for name, by_category in scores.items():
        rows = [row for category in CATEGORIES for row in by_category[category]]
        overall[name] = mean_at(rows, 1)
        cells = "  ".join(f"{cell(by_category[c]):<18}" for c in CATEGORIES).rstrip()
        print(f"  {name:<16}{mean_at(rows, 0):9.3f}{overall[name]:10.3f}{len(rows):5d}   {cells}")
    return overall


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def chosen_embedder(name: str) -> Embedder:
    """``local``: the model the local-embeddings extra carries; ``configured``: the one
    steward's settings name."""
    if name == LOCAL:
        os.environ["HF_HUB_OFFLINE"] = "1"
        embedder = choose_embedder(LOCAL, None, None)
    else:
        settings = load_settings()
        embedder = choose_embedder(
            settings.embedding_model, settings.openai_base_url, settings.openai_api_key
        )
    if embedder is None:
        raise SystemExit(
            "no embedding model is configured: set STEWARD_EMBEDDING_MODEL and "
            "OPENAI_BASE_URL (or OPENAI_API_KEY), or use --embedder local"
        )
    return embedder


async def main(dataset: Path, embedder: Embedder, alpha: float, sweep: bool, tag: bool) -> None:
    samples = load(dataset, tag)
    timings = Timings()
    began = time.perf_counter()
    await embedder.embed(["warm up"])  # loads the model
    timings.model_load = time.perf_counter() - began

    stores = [(await ingest(sample, embedder, timings), sample) for sample in samples]
    hybrid = f"hybrid a={alpha:g}"
    modes: Modes = {"keyword-only": (0.0, False), "vector-only": (1.0, True), hybrid: (alpha, True)}
    scores, latencies = await evaluate(stores, modes)

    questions = sum(len(sample.questions) for sample in samples)
    print(
        f"memory recall on {dataset.name}: {len(samples)} samples, {timings.turns} turns, "
        f"{questions} questions (categories 1–4 with evidence), {embedder.name}, "
        + ("turns tagged with their client" if tag else "turns untagged")
    )
    print(
        f"  model load {timings.model_load:.2f} s   embedding: {timings.turns} turns "
        f"{timings.embed_turns:.2f} s ({timings.turns / timings.embed_turns:,.0f}/s), "
        f"{questions} questions {timings.embed_questions:.2f} s\n"
        f"  ingest (upsert) {timings.ingest * 1000:.1f} ms "
        f"({timings.turns / timings.ingest:,.0f} records/s)"
    )
    print(
        f"  search latency over {len(latencies)} searches: "
        f"p50 {statistics.median(latencies):.2f} ms  max {max(latencies):.2f} ms"
    )
    overall = print_table(scores)

    if sweep:
        sweep_modes: Modes = {f"hybrid a={a:g}": (a, True) for a in SWEEP}
        swept, _ = await evaluate(stores, sweep_modes)
        print("  alpha sweep, hybrid recall@10 (recall@5):")
        cells = []
        for name, by_category in swept.items():
            rows = [row for category in CATEGORIES for row in by_category[category]]
            cells.append(
                f"{name.removeprefix('hybrid ')}: {mean_at(rows, 1):.3f} ({mean_at(rows, 0):.3f})"
            )
        for start in range(0, len(cells), 3):
            print("    " + "   ".join(cells[start : start + 3]))

    for memory, _ in stores:
        await memory.close()
    await embedder.close()

    ten, lift = overall[hybrid], overall[hybrid] - overall["keyword-only"]
    print(f"  hybrid recall@10 {ten:.3f} (target ≥ 0.85): {verdict(ten >= 0.85)}")
    print(
        f"  hybrid - keyword-only recall@10 {lift:+.3f} (target ≥ +0.10): "
        f"{verdict(lift >= 0.10 - 1e-9)}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument(
        "--embedder",
        choices=[LOCAL, "configured"],
        default=LOCAL,
        help="the local model, or the one STEWARD_EMBEDDING_MODEL names",
    )
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--alpha-sweep", action="store_true", help="hybrid r@10 for 0.1..0.9")
    parser.add_argument(
        "--untagged",
        action="store_true",
        help="ignore the samples' entities: no turn is tagged with a client",
    )
    arguments = parser.parse_args()
    asyncio.run(
        main(
            arguments.dataset,
            chosen_embedder(arguments.embedder),
            arguments.alpha,
            arguments.alpha_sweep,
            not arguments.untagged,
        )
    )
