"""Agent steps: a model drafts from the step's prompt, or its template fills in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from graph.budget import BudgetExceeded, NoRoom
from graph.definitions import AgentStep
from graph.models import LanguageModels, ModelUnusable, as_data
from graph.templating import as_text, render
from memory.ledger import storable

BLANK_LINES = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")  # more than one blank line
# A draft waits no longer for the model (each attempt may take a minute, and a failed one
# is made twice more: three minutes of a run standing still): past it, the template
# writes the text. A wait for room in the budgets is not counted (Budgets.patience).
DRAFT_SECONDS = 90.0


@dataclass(frozen=True)
class Draft:
    text: str
    source: str  # "template" or "model:<name>"
    note: str | None = None

    @property
    def written_by(self) -> str:
        """Who wrote it, as its approval card says: the model, or the template (and why
        not the model, when one was asked)."""
        if self.source.startswith("model:"):
            return f"the model {self.source.removeprefix('model:')}"
        if self.note is None:
            return "the process's template"
        failed = "the model failed" if self.note.startswith("model failed") else self.note
        return f"the process's template ({failed})"


class Drafter:
    def __init__(self, models: LanguageModels | None) -> None:
        self.models = models

    async def draft(self, step: AgentStep, values: dict[str, Any], run_id: str) -> Draft:
        if self.models is None or step.prompt is None:
            return Draft(_filled(step.template, values), "template")
        prompt = render(step.prompt, {k: as_data(as_text(v)) for k, v in values.items()})
        try:
            text = await self.models.complete(
                prompt,
                purpose="draft",
                run_id=run_id,
                step_id=step.id,
                fast=step.model == "fast",
                within=DRAFT_SECONDS,
            )
        except BudgetExceeded:  # spent: the run stops and waits for the operator
            raise
        except (ModelUnusable, NoRoom) as exc:  # a setting to fix, or no room: the card says
            return Draft(_filled(step.template, values), "template", str(exc))
        except TimeoutError:
            note = f"the model did not answer within {DRAFT_SECONDS:g} s"
            return Draft(_filled(step.template, values), "template", note)
        except Exception as exc:  # a model outage must not stop the run: fall back
            note = storable(f"model failed: {exc}")  # a service's words may hold anything
            return Draft(_filled(step.template, values), "template", note)
        if not text:
            return Draft(_filled(step.template, values), "template", "model returned nothing")
        name = self.models.fast_name if step.model == "fast" else self.models.strong_name
        return Draft(text, f"model:{name}")


def _filled(template: str, values: dict[str, Any]) -> str:
    """The template filled in; a paragraph of an input left out leaves no gap."""
    return BLANK_LINES.sub("\n\n", render(template, values)).strip()
