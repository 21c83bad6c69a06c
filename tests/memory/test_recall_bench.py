"""The recall benchmark reads a LoCoMo-format file and scores what each mode finds,
here with the vectors of a configured OpenAI-compatible endpoint (a local one)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.memory_recall import chosen_embedder, main
from tests.fakes.openai_api import fake_openai

FILLER = [
    "weather talk about rain in the valley",
    "the train was late again this morning",
    "lunch at the corner place with soup",
    "a podcast about gardening and tomatoes",
    "new keyboard arrived and it clicks loudly",
    "the cat knocked a plant off the shelf",
]


def dataset(path: Path) -> Path:
    """One sample: evidence among thirty turns of chatter, in two sessions. Of the
    questions scored, one shares its evidence's words and one shares none; the others
    are left out (category 5, and a question without evidence)."""
    turns = [
        {"speaker": "Maya", "dia_id": f"D1:{n + 1}", "text": f"{FILLER[n % 6]} ({n})"}
        for n in range(15)
    ]
    turns[7]["text"] = "Ferncliff Dental approved the quote for the booking widget"
    later = [
        {"speaker": "Ola", "dia_id": f"D2:{n + 1}", "text": f"{FILLER[(n + 3) % 6]} [{n}]"}
        for n in range(15)
    ]
    later[4]["text"] = "zebra quantum marmalade"
    sample = {
        "sample_id": "tiny",
        "conversation": {
            "speaker_a": "Maya",
            "speaker_b": "Ola",
            "session_1": turns,
            "session_1_date_time": "9:14 am on 3 March, 2026",
            "session_2": later,
            "session_2_date_time": "4:02 pm on 9 March, 2026",
        },
        "qa": [
            {
                "question": "Which quote did Ferncliff Dental approve for the booking widget?",
                "answer": "the booking widget",
                "evidence": ["D1:8"],
                "category": 4,
            },
            {
                "question": "What did the dentist sign off on?",
                "answer": "nothing findable by these vectors",
                "evidence": ["D2:5"],
                "category": 1,
            },
            {"question": "Unanswerable?", "answer": "", "evidence": ["D1:1"], "category": 5},
            {"question": "No evidence?", "answer": "", "evidence": [], "category": 2},
        ],
    }
    file = path / "tiny.json"
    file.write_text(json.dumps([sample]))
    return file


async def test_the_benchmark_scores_recall_with_the_configured_embedding_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with fake_openai() as server:
        monkeypatch.setenv("STEWARD_EMBEDDING_MODEL", "bench-model")
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
        await main(dataset(tmp_path), chosen_embedder("configured"), 0.5, False, True)

    printed = capsys.readouterr().out
    assert "1 samples, 30 turns, 2 questions" in printed
    assert "openai:bench-model" in printed
    assert {request["model"] for request in server.requests} == {"bench-model"}
    for mode in ("keyword-only", "vector-only", "hybrid a=0.5"):
        row = re.search(rf"^  {re.escape(mode)}\s+([\d.]+)\s+([\d.]+)\s+2\b", printed, re.M)
        assert row is not None, printed
        assert (float(row.group(1)), float(row.group(2))) == (0.5, 0.5), row.group(0)
    assert "hybrid recall@10 0.500 (target ≥ 0.85): NOT met" in printed
    assert "hybrid - keyword-only recall@10 +0.000 (target ≥ +0.10): NOT met" in printed


def test_without_a_configured_model_the_benchmark_says_what_to_set() -> None:
    with pytest.raises(SystemExit, match="STEWARD_EMBEDDING_MODEL"):
        chosen_embedder("configured")
