"""What a run carries between steps, and what each step's node can reach."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Annotated, Any, TypedDict

from graph.drafting import Drafter
from graph.effects import EffectGuard


def merge(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    return {**(left or {}), **(right or {})}


class RunState(TypedDict, total=False):
    data: Annotated[dict[str, Any], merge]  # inputs and step outputs, by name
    visits: Annotated[dict[str, int], merge]  # how often each step ran
    decisions: Annotated[dict[str, dict[str, Any]], merge]  # the latest decision per gate
    spent: Annotated[dict[str, int], merge]  # per action: the gate visit it acted on
    drafted: Annotated[dict[str, str], merge]  # per agent step's output: who wrote it
    outcome: str  # how the run ended when it did not simply succeed


@dataclass(frozen=True)
class StepContext:
    """Passed to every node at run time; nodes reach nothing else.

    ``log`` collects one timeline entry per step executed in this invocation; the
    engine writes them to the ledger when the run stops, so the checkpointed state
    does not grow with the run's history.
    """

    run_id: str
    effects: EffectGuard
    drafter: Drafter
    log: list[dict[str, Any]] = field(default_factory=list)
    zone: tzinfo = UTC  # STEWARD_TIMEZONE: what day ``{today}`` is
