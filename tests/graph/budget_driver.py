"""A steward process for the test of a budget shared by stewards on one ledger: once told
to go (a line on stdin), it asks the model CALLS times at once, and prints how many
calls were answered and how many a spent budget stopped.

python -m tests.graph.budget_driver HOME DATABASE_URL OPENAI_BASE_URL CALLS
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bot.app import Steward
from bot.settings import load_settings
from graph.budget import BudgetExceeded

# With the system prompt, 400 bytes: 100 tokens, as many as the fake server counts, so
# that a call's worst cost (house-model bills nothing for its answer) is what it costs.
PROMPT = "Say hello.".ljust(254)
PRICES = "house-model=100/0"  # $0.01 a call
DAILY = 0.035  # room for three calls at once; a fourth goes alone, and spends it


async def ask(home: Path, database_url: str, base_url: str, calls: int) -> None:
    settings = load_settings(
        home=home,
        database_url=database_url,
        llm_model="house-model",
        openai_base_url=base_url,
        openai_api_key="sk-test",
        model_prices=PRICES,
        budget_daily=DAILY,
    )
    async with Steward.open(settings) as steward:
        models = steward.history.models
        assert models is not None
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        asked = (models.complete(PROMPT, purpose="route") for _ in range(calls))
        outcomes = await asyncio.gather(*asked, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, BudgetExceeded):
            raise outcome
    answered = sum(isinstance(outcome, str) for outcome in outcomes)
    print(answered, len(outcomes) - answered, flush=True)


if __name__ == "__main__":
    asyncio.run(ask(Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])))
