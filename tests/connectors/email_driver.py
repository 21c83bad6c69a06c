"""A steward process for the email crash test: onboard clients until there are N runs.

    python -m tests.connectors.email_driver HOME SMTP_PORT N

On each start it first recovers what a kill left mid-step, then decides every pending
welcome email — every fifth client's is rejected, the rest approved — and starts the
next run, until N runs exist and none is waiting. The test kills it at random moments.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bot.app import Steward
from bot.settings import load_settings
from graph.effects import RetryPolicy
from memory.ledger import RunStatus

RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, timeout=10)


def rejected(client: str) -> bool:
    return int(client.removeprefix("client-")) % 5 == 0


async def drive(home: Path, port: int, total: int) -> None:
    settings = load_settings(
        home=home, smtp_url=f"smtp://127.0.0.1:{port}", email_from="steward@example.com"
    )
    async with Steward.open(settings, retry=RETRY) as steward:
        await steward.engine.recover()
        print("ready", flush=True)  # the test's kill clock starts here, not at import
        while True:
            for approval in await steward.ledger.pending_approvals():
                run = await steward.ledger.get_run(approval.run_id)
                assert run is not None
                approve = not rejected(run.inputs["client"])
                await steward.engine.decide(approval.id, approve, "cli:driver")
            runs = await steward.ledger.list_runs(None, limit=10_000)
            if len(runs) >= total:
                if all(r.status is not RunStatus.WAITING for r in runs):
                    print("done", flush=True)  # the work is over: the test stops killing
                    return
                continue
            client = f"client-{len(runs) + 1}"
            inputs = {"client": client, "email": f"{client}@example.com", "package": "basic"}
            await steward.engine.start("onboarding", inputs, "cli:driver")


if __name__ == "__main__":
    asyncio.run(drive(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
