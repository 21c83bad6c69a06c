"""``steward demo``: a scripted tour, offline and without input, in a throwaway home."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from bot.app import Steward
from bot.console import ConsoleChannel
from bot.settings import load_settings

SCRIPT = [
    "/processes",
    "onboard Jane from Acme Corp (jane@acme.com) on the premium package",
    "1",  # Approve the welcome email
    "1",  # Approve the project folder
    "/runs all",
]
# The tour touches nothing of the operator's, whatever the environment says: not their
# database, model, mail server (it would email jane@acme.com), Redis or Weaviate, nor
# their own processes and webhooks.
OFFLINE: dict[str, object] = {
    "database_url": None,
    "llm_model": None,
    "llm_fast_model": None,  # alone, it is refused
    "embedding_model": "none",
    "redis_url": None,
    "weaviate_url": None,
    "smtp_url": None,
    "email_from": None,
    "processes_dir": None,
    "hooks_file": None,
}


async def play(pause: float = 0.0) -> int:
    with tempfile.TemporaryDirectory(prefix="steward-demo-") as home:
        settings = load_settings(home=Path(home), **OFFLINE)
        async with Steward.open(settings) as steward:
            out = sys.stdout
            console = ConsoleChannel(steward.door, user="demo", out=out)
            for line in SCRIPT:
                print(f"you › {line}", file=out, flush=True)
                await console.say(line)
                await asyncio.sleep(pause)
            effects = sorted(settings.outbox_dir.glob("*.json"))
            print(
                f"The outbox (effects, without a mail server) now holds {len(effects)}; it goes "
                "with the tour's home as the tour ends:",
                file=out,
            )
            for path in effects:
                effect = json.loads(path.read_text(encoding="utf-8"))
                to = effect["params"].get("to") or effect["params"].get("name", "")
                print(f"  {effect['connector']} · {effect['action']} · {to}", file=out)
            report = await steward.ledger.verify_audit()
            print(f"Audit log: {report.checked} events, chain intact: {report.ok}", file=out)
            return 0 if len(effects) == 2 and report.ok else 1
