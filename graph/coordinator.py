"""The coordinator: every rule about what a message means lives here, once.

The front door hands over an operator's ``Inbound``, stored and checked; the coordinator
routes it — tier 0 commands and buttons, tier 1 rules, tier 2 a model — and answers
with a neutral ``Reply``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from graph.budget import Budgets, Spending
from graph.cards import approval_card, decision_line, outcome, run_outcome
from graph.catalog import Catalog
from graph.definitions import ProcessDefinition
from graph.digest import DailyList, daily_list
from graph.engine import Decision, InputProblem, ProcessEngine, RunView
from graph.errors import (
    AMOUNTS_READ,
    NotFound,
    StewardError,
    UncountedPayment,
    UnreadableAmount,
)
from graph.history import (
    NOTHING,
    UNAVAILABLE,
    History,
    looks_like_a_question,
    plainly_a_question,
)
from graph.ids import is_approval_id, is_run_id
from graph.inputs import InputError, InputSpec, InputType
from graph.messages import EditPrompt, Inbound, Reply, as_shown
from graph.remembering import entity_of, said_record
from graph.routing import Router, opens_a_request, parse_arguments
from graph.timeline import more_than_owed, render_timeline, timeline
from memory.ledger import ApprovalStatus, Ledger, Run, RunStatus, utcnow
from memory.longterm import MemoryUnavailable, RecordKind
from memory.working import WorkingMemory

log = logging.getLogger(__name__)

ACTIVE = [RunStatus.RUNNING, RunStatus.WAITING, RunStatus.PAUSED, RunStatus.FAILED]
NO_MODEL = (
    "No model is set up (STEWARD_LLM_MODEL), so nothing is spent: steward drafts from each "
    "process's templates and routes plain words by rules."
)
RUNS_SHOWN = 30  # the newest runs /runs lists
# A running run whose steward was killed mid-step, with none beside it to take it over.
LEFT_MID_STEP = "its steward stopped mid-step: /retry {run} moves it on"
QUESTION_TTL = 24 * 3600
# A rejection's reason comes right after the press or not at all: a message later is
# something else ("onboard Beta …"), not a reason to note.
REASON_TTL = 15 * 60
# An optional input of words answered with one of these is left out, as /skip leaves it.
NONE = frozenset({"none", "no", "nothing", "n/a", "na", "-", "no thanks", "nope"})
WORDS = (InputType.STRING, InputType.TEXT)
PARTS_TTL = 3600  # a new text typed in chat waits this long for its yes
ASK_YES = (
    "Say yes to approve the card with it. Anything else you send is added to it; /cancel "
    "keeps the card as it is."
)
NOT_SURE = "If you meant me to do something, I'm not sure what you need."
TURNS_KEPT = 20  # recent turns of a chat in working memory, for a model's context
TURNS_TTL = 24 * 3600
TOPIC_SECONDS = 30 * 60  # a message naming no client is about the chat's last one, this fresh
UTC_ZONE = ZoneInfo("UTC")
# Where the chat lists what a NotFound was looking for.
LISTINGS = {"runs": "/runs all lists them", "approvals": "/runs lists the pending ones"}

# The command menu a chat platform shows (Telegram's setMyCommands): name, what it does.
COMMANDS = (
    ("run", "start a process: /run PROCESS key=value …"),
    ("runs", "runs in progress, with pending approvals"),
    ("approve", "approve a pending approval: /approve ID"),
    ("reject", "reject it: /reject ID [reason]"),
    ("cancel", "cancel a run, or the question I asked"),
    ("pause", "pause a waiting run: /pause RUN"),
    ("resume", "let a paused run go on: /resume RUN"),
    ("retry", "retry a failed run: /retry RUN"),
    ("confirm", "an uncertain step did happen: go on without it again: /confirm RUN"),
    ("replay", "run a run again from a step: /replay RUN STEP [key=value …]"),
    ("paid", "record a payment that came another way: /paid RUN [AMOUNT] (none: all of it)"),
    ("undo", "undo a step that acted, after approval: /undo RUN STEP"),
    ("today", "what needs you today, ranked: /today [all]"),
    ("budget", "model spend by day, month and process, against the budgets"),
    ("history", "ask about anything that happened: /history what did we quote Acme?"),
    ("processes", "what I can run"),
    ("help", "all commands"),
)

COMMAND_NAMES = {name for name, _ in COMMANDS} | {"skip", "start"}
# What a button press says it is for (``verb:id``): the buttons of cards and of the
# daily list. "edited" and "keep" come from the Edit form, not from a button.
BUTTON_VERBS = ("approve", "reject", "edit", "details", "retry", "confirm", "resume")
# The commands that only show what is there, and so write nothing: answered before their
# delivery is stored (see ``FrontDoor.claim_unstored``).
SHOWING = frozenset({"help", "start", "processes", "runs", "budget"})
QUESTION_COMMANDS = {"cancel", "skip"}  # a question waiting for its answer: said instead
# The commands whose first argument is an id, and how many arguments they take: None
# for any number (a reason, a step and its inputs).
BY_ID: dict[str, tuple[Callable[[str], bool], int | None]] = {
    "runs": (is_run_id, 1),
    "approve": (is_approval_id, 1),
    "reject": (is_approval_id, None),
    "cancel": (is_run_id, 1),
    "pause": (is_run_id, 1),
    "resume": (is_run_id, 1),
    "retry": (is_run_id, 1),
    "confirm": (is_run_id, 1),
    "replay": (is_run_id, None),
    "undo": (is_run_id, 2),
}

HELP = """\
Commands:
/run PROCESS key=value …  start a process (missing inputs are asked for)
/runs [all] · /runs RUN  runs in progress · one run's timeline
/approve ID · /reject ID [reason]
/cancel RUN              cancel a run (or /cancel the question I asked)
/pause RUN · /resume RUN · /retry RUN
/confirm RUN             an uncertain step did happen: go on without it again
/replay RUN STEP [k=v …] run it again from a step; gates ask again
/paid RUN [AMOUNT]       a payment that came another way (a cheque); no amount: all of it
/undo RUN STEP           undo a step that acted, after approval
/today [all] · /budget   what needs you today · model spend
/history QUESTION        what happened, with sources ("what did we quote Acme in March?")
/processes · /help
Or just say what you need, e.g. "onboard Jane from Acme (jane@acme.com), premium"."""


@dataclass
class Coordinator:
    ledger: Ledger
    engine: ProcessEngine
    catalog: Catalog
    memory: WorkingMemory
    router: Router
    zone: ZoneInfo = UTC_ZONE  # STEWARD_TIMEZONE: the operator's day
    budgets: Budgets | None = None
    history: History | None = None

    def _now(self) -> datetime:
        """Now on the operator's clock."""
        return utcnow().astimezone(self.zone)

    async def handle(self, inbound: Inbound) -> Reply:
        """Answers an operator's message; the front door has stored it and checked who
        sent it."""
        text, about, remembered = "", None, False
        try:
            if inbound.button:
                return await self._button(inbound, inbound.button)
            if inbound.attachment is not None:
                return await self._attached(inbound)
            text = (inbound.text or "").strip()
            if text.startswith("/"):
                return await self._command(inbound, text)
            pending = await self.memory.get(self._question_key(inbound))
            if pending is not None and pending["type"] == "reason" and self._no_reason(text):
                await self.memory.delete(self._question_key(inbound))
                pending = None  # the rejection stays without one
            if (command := self._unslashed(text, asked=pending is not None)) is not None:
                return await self._command(inbound, command)
            asks_history = pending is None and self._asks_history(text)
            if asks_history:
                answered = await self._history_question(inbound, text)
                if answered is not None:
                    return answered
            if text and not asks_history:  # a question memory had nothing on is no news
                about = await self._remember_said(inbound, text, pending)
                remembered = True
            reply = await (
                self._answer(inbound, pending, text)
                if pending is not None
                else self._free_text(inbound, text)
            )
        except NotFound as exc:
            reply = Reply().say(exc.told(LISTINGS))
        except StewardError as exc:
            reply = Reply().say(str(exc))
        if remembered:
            await self._remember_answer(inbound, about, reply)
        return reply

    async def only_shows(self, inbound: Inbound) -> bool:
        """Whether ``inbound`` is a command that only shows something (``/runs``,
        ``/budget``, ``/help``): answering it writes nothing. Typed without its slash, it is
        one only while no question waits for its sender's answer."""
        if inbound.button or inbound.attachment is not None:
            return False
        text = (inbound.text or "").strip()
        typed = text if text.startswith("/") else self._unslashed(text, asked=False)
        head = typed.split(maxsplit=1)[0] if typed else ""
        if head[1:].split("@", 1)[0].lower() not in SHOWING:
            return False
        return typed == text or await self.memory.get(self._question_key(inbound)) is None

    async def _attached(self, inbound: Inbound) -> Reply:
        """A file is neither an answer nor a request: its caption would be taken for its
        content (an edited draft sent as a file would go out as "here it is")."""
        waiting = await self.memory.get(self._question_key(inbound)) is not None
        return Reply().say(
            f"I read only typed text, not {inbound.attachment}: paste the text into the chat"
            + ("; I am still waiting for your answer." if waiting else ".")
        )

    def _unslashed(self, text: str, asked: bool) -> str | None:
        """A command typed without its slash, as it must be where the platform takes a
        leading ``/word`` for a command of its own (a Slack message box); None for words.

        Only the command's shape makes one: ``runs``, ``today all``, ``approve a3k9m2p``,
        ``run onboarding client=Acme``; "help me onboard Jane" and "run out of budget"
        stay words. While a question waits for its answer, everything is the answer but
        ``cancel`` and ``skip`` on their own."""
        name, *args = text.split() or [""]
        name = name.lower() if args else name.lower().rstrip(".!")  # "Cancel." on a phone
        if asked:
            shaped = name in QUESTION_COMMANDS and not args
        elif not args:
            shaped = name in COMMAND_NAMES
        elif name == "run":
            shaped = self.catalog.get(args[0].lower()) is not None
        elif name in ("runs", "today") and args == ["all"]:
            shaped = True
        elif name == "history":
            shaped = True  # history and a question
        else:
            shaped = _takes_an_id(name, args)
        if not shaped:
            return None
        return "/" + text if args else "/" + name

    def _no_reason(self, text: str) -> bool:
        """Whether ``text``, said when a rejection's reason was asked for, is something
        else: a question, or a request a rule recognises that is plainly one (see
        ``opens_a_request``); a reason may name a process ("the welcome email is too
        formal")."""
        if plainly_a_question(text):
            return True
        route = self.router.by_rules(text)
        return route is not None and opens_a_request(route, text)

    def _asks_history(self, text: str) -> bool:
        """A question ("why did we reject the Acme email?"); one that only ends with a
        question mark must not be a request the rules recognise ("onboard Jane?")."""
        if self.history is None or not looks_like_a_question(text):
            return False
        return plainly_a_question(text) or self.router.by_rules(text) is None

    async def _history_question(self, inbound: Inbound, text: str) -> Reply | None:
        """An answer from memory, or None when memory holds nothing about it (a question
        ending in a question mark may be a request: "onboard Jane?") or fails."""
        assert self.history is not None
        try:
            found = await self.history.search(text, utcnow())
        except MemoryUnavailable as exc:
            return Reply().say(UNAVAILABLE.format(exc))
        except Exception:
            log.exception("could not search long-term memory; taking it as a request")
            return None
        if not found.hits:
            return None
        history = self.history
        return await self._history_reply(
            inbound, text, lambda recent: history.compose(text, found, utcnow(), recent)
        )

    async def _history_reply(
        self,
        inbound: Inbound,
        question: str,
        answer: Callable[[list[dict[str, Any]]], Awaitable[str]],
    ) -> Reply:
        """``answer`` given the chat's recent turns; the question and the answer are kept
        as turns for follow-up questions, not in long-term memory: answers about history
        would come back as history."""
        turns = self._turns_key(inbound)
        said = await answer(await self.memory.recent(turns, 6))
        await self._keep_turn(turns, "operator", question, None)
        await self._keep_turn(turns, "steward", said, None)
        return Reply().say(said)

    async def _remember_said(
        self, inbound: Inbound, text: str, pending: dict[str, Any] | None
    ) -> str | None:
        """Journals the operator's words before handling them, so that they ride with
        the handling's first write; returns the client they are about.

        An answer to a card's question (its new text, a reason) is about the card's run,
        one to a form's about the client the form was given; other words that name no
        client are about the one the chat was just talking about ("send it to Tomasz,
        he signs off on budget"), if that was recent."""
        now = utcnow()
        turns = self._turns_key(inbound)
        about = await self._asked_about(pending, text)
        if about is None and self.history is not None:
            about = (await self.history.entities.known()).named(text)
        if about is None:
            last = await self.memory.recent(turns, 1)
            if last and now.timestamp() - float(last[0].get("at", 0)) < TOPIC_SECONDS:
                about = last[0].get("entity")
        record = said_record(
            self._source(inbound) + ":message",
            RecordKind.MESSAGE,
            text,
            now,
            inbound.sender.key,
            self._chat(inbound),
            about,
        )
        await self._journal(record)
        await self._keep_turn(turns, "operator", text, about)
        return about

    async def _asked_about(self, pending: dict[str, Any] | None, text: str) -> str | None:
        """What a pending question is about: its approval's run, or its form, this answer
        included (it may be the client's name)."""
        if pending is None:
            return None
        if pending["type"] == "form":
            return entity_of({**pending["values"], pending["asking"]: text})
        if "approval" not in pending:
            return None
        approval = await self.ledger.get_approval(pending["approval"])
        run = await self.ledger.get_run(approval.run_id) if approval else None
        return entity_of(run.inputs) if run else None

    async def _remember_answer(self, inbound: Inbound, about: str | None, reply: Reply) -> None:
        answer = "\n".join(reply.texts).strip()
        if answer and NOT_SURE not in answer:  # saying what it can do is not worth finding
            record = said_record(
                self._source(inbound) + ":reply",
                RecordKind.REPLY,
                answer,
                utcnow(),
                "steward",
                self._chat(inbound),
                about,
            )
            await self._journal(record)
            await self._keep_turn(self._turns_key(inbound), "steward", answer, about)
        if self.history is not None:
            self.history.sync.wake()

    async def _journal(self, record: dict[str, Any]) -> None:
        if not self.ledger.defer(lambda tx: tx.journal([record])):
            await self.ledger.journal([record])

    async def _keep_turn(self, turns: str, who: str, text: str, about: str | None) -> None:
        turn = {"who": who, "text": text[:2000], "entity": about, "at": utcnow().timestamp()}
        await self.memory.push(turns, turn, TURNS_KEPT, TURNS_TTL)

    @staticmethod
    def _source(inbound: Inbound) -> str:
        return f"inbound:{inbound.sender.channel}:{inbound.external_id}"

    @staticmethod
    def _chat(inbound: Inbound) -> str:
        return f"{inbound.sender.channel}/{inbound.chat_id}"

    # -- tier 0: commands and buttons --------------------------------------------------

    async def _command(self, inbound: Inbound, text: str) -> Reply:
        head, *after = text.split(maxsplit=1)  # "/reject ID" and its reason on a line below
        name = head[1:].split("@", 1)[0].lower()
        rest = after[0].strip() if after else ""
        actor = inbound.sender.key
        match name:
            case "help" | "start":
                return Reply().say(HELP)
            case "processes":
                return Reply().say(self._processes())
            case "run":
                return await self._run_command(inbound, rest)
            case "runs":
                if rest and rest.lower() != "all":
                    run_id = _one_id(rest, "runs")
                    if (run := await self.ledger.get_run(run_id)) is None:
                        raise NotFound(f"no run {run_id!r}", "runs")
                    rows = await timeline(self.ledger, run)
                    shown = render_timeline(run, rows, self.zone)
                    if waiting := await self.ledger.pending_approvals([run.id]):
                        shown += f"\n  pending approvals: {', '.join(a.id for a in waiting)}"
                    return Reply().say(shown)
                return await self.runs_reply(show_all=rest.lower() == "all")
            case "today":
                if rest.lower() not in ("", "all"):
                    return Reply().say("Usage: /today, or /today all for every item")
                return await self.today_reply(show_all=rest.lower() == "all")
            case "budget":
                return Reply().say(await self.budget_report())
            case "history":
                if self.history is None:
                    return Reply().say("Long-term memory is not set up here.")
                history = self.history
                return await self._history_reply(
                    inbound, rest, lambda recent: history.answer(rest, utcnow(), recent)
                )
            case "approve":
                approval_id = _one_id(rest, "approve")
                await self._drop_question(inbound, approval_id)  # a new text asked for it
                return await self.decide(approval_id, True, actor)
            case "reject":
                given, *reason = rest.split(maxsplit=1) or [""]
                approval_id = _one_id(given, "reject")
                await self._drop_question(inbound, approval_id)
                return await self.decide(approval_id, False, actor, reason[0] if reason else None)
            case "cancel":
                if not rest:
                    return await self._cancel_question(inbound)
                run = await self.engine.cancel(_one_id(rest, "cancel"), actor)
                return Reply().say(f"Cancelled run {run.id} ({run.process}).")
            case "done":  # a new text sent in parts is all there (typed with its slash)
                pending = await self.memory.get(self._question_key(inbound))
                if pending is None or not pending.get("parts"):
                    return Reply().say("Nothing to finish: I am not putting a text together.")
                return await self._new_text(inbound, pending, "done")
            case "skip":
                pending = await self.memory.get(self._question_key(inbound))
                if pending is None:
                    return Reply().say("Nothing to skip: I am not waiting for an answer.")
                if pending["type"] == "form":
                    return await self._skip_input(inbound, pending)
                await self.memory.delete(self._question_key(inbound))
                return Reply().say("Okay.")
            case "pause":
                run = await self.engine.pause(_one_id(rest, "pause"), actor)
                return Reply().say(f"Paused run {run.id}. /resume {run.id} to go on.")
            case "resume":
                return self.describe(await self.engine.resume(_one_id(rest, "resume"), actor))
            case "retry":
                return self.describe(await self.engine.retry(_one_id(rest, "retry"), actor))
            case "confirm":
                return self.describe(await self.engine.confirm(_one_id(rest, "confirm"), actor))
            case "replay":
                positional, named = parse_arguments(rest, strict=True)
                if len(positional) != 2:
                    raise StewardError("Usage: /replay RUN STEP [key=value …]")
                run_id, step = positional[0].lower(), positional[1].lower()
                view = await self.engine.replay(run_id, step, named, actor)
                reply = Reply().say(f"Replaying run {view.run.id} from {step}.")
                return self._describe(view, reply)
            case "paid":
                return await self._paid(rest, actor)
            case "undo":
                parts = rest.lower().split()
                if len(parts) != 2:
                    raise StewardError("Usage: /undo RUN STEP (the card of a step says if it can)")
                view = await self.engine.compensate(parts[0], parts[1], actor, inbound.news_address)
                return self.describe(view)
            case _:
                return Reply().say(f"I don't know /{name}.\n\n{HELP}")

    async def _paid(self, rest: str, actor: str) -> Reply:
        run_id, _, amount = rest.partition(" ")
        run_id, amount = run_id.lower(), amount.strip()
        if not run_id:
            raise StewardError("Usage: /paid RUN [AMOUNT] (no amount: all it is owed)")
        if not is_run_id(run_id):
            raise NotFound(f"no run {run_id!r}", "runs")
        return (await self.record_payment(run_id, amount or None, actor))[0]

    async def record_payment(
        self, run_id: str, amount: str | None, actor: str
    ) -> tuple[Reply, RunView | None]:
        """A payment the operator says came another way (/paid, `steward paid`), recorded
        as a webhook's is: what to tell them, and the run where it stopped (None: it
        keeps the payment for when it waits for it). One it counts none of raises
        StewardError, saying why."""
        try:
            view = await self.engine.record_payment(run_id, amount, actor)
        except UncountedPayment as exc:
            told = f"Run {run_id} counts none of it: the payment {exc.said}. Nothing changed."
            if isinstance(exc, UnreadableAmount):
                told += f" {AMOUNTS_READ}"
            raise StewardError(told) from None
        if view is None:
            reply = Reply().say(
                f"Recorded the payment for run {run_id}: it does not wait for one yet, and "
                "counts it when it gets there."
            )
            return await self.tell_still_waiting(reply, run_id, "paid"), None
        noted = await self.payment_counted(view.run.id)
        # as read, in the run's currency: "1,00" of €2,500.00 is €1.00, not "1,00"
        what = f"{noted.get('came', amount)} paid" if amount else "all of it paid"
        told = f"Recorded for run {view.run.id}: {what}{more_than_owed(noted)}."
        return self._describe(view, Reply().say(told)), view

    async def payment_counted(self, run_id: str) -> dict[str, str]:
        """What the payment that last woke ``run_id`` came to, as its wait noted it:
        "came" (what it paid), "paid" (so far), "owed" (still) and "over" (more than
        was owed), each as noted; empty for a wait that pays no money input."""
        steps = await self.ledger.run_steps(run_id)
        woke = next((s.detail for s in reversed(steps) if s.kind == "wait"), {})
        return {
            key: value
            for key in ("came", "paid", "owed", "over")
            if isinstance(value := woke.get(key), str)
        }

    async def tell_still_waiting(self, reply: Reply, run_id: str, because: str) -> Reply:
        """``reply`` with each approval of the run that still waits, and how to reject it
        if what came (a payment) means it should not happen now."""
        for approval in await self.ledger.pending_approvals([run_id]):
            summary = approval.card.get("summary", approval.step_id)
            reply.say(
                f"Approval {approval.id} still waits ({summary}): reject it if that "
                f"should not happen now (/reject {approval.id} {because})."
            )
        return reply

    async def _button(self, inbound: Inbound, payload: str) -> Reply:
        verb, _, approval_id = payload.partition(":")
        actor = inbound.sender.key
        if verb in ("approve", "reject"):  # a new text asked for it is no longer wanted
            await self._drop_question(inbound, approval_id)
        match verb:
            case "approve":
                return await self.decide(approval_id, True, actor)
            case "reject":
                decision = await self.engine.decide(approval_id, False, actor)
                reply = self.decision_reply(decision)
                if decision.decided_now:
                    reason = {"type": "reason", "approval": approval_id}
                    await self._ask(inbound, reason, REASON_TTL)
                    reply.say("Why? Reply with a reason for the record, or /skip.")
                return reply
            case "edit":
                approval = await self.ledger.get_approval(approval_id)
                if approval is None or not approval.is_pending:
                    return await self.decide(approval_id, True, actor)  # explains who decided
                if not approval.editable:
                    return Reply().say("This step has no text to edit.")
                await self._ask(inbound, {"type": "edit", "approval": approval_id})
                prompt = (
                    "Send the new text; I show it whole, and yes approves the card with it. "
                    "/cancel to keep the card as it is."
                )
                return Reply().add(EditPrompt(approval_id, approval.card.get("text") or "", prompt))
            case "edited":  # the new text from a form the edit prompt opened
                await self._drop_question(inbound, approval_id)
                if not (inbound.text or "").strip():
                    return Reply().say("The new text is empty; the card stays as it is.")
                return await self.decide(approval_id, True, actor, edited_text=inbound.text)
            case "keep":  # the form was closed without a new text
                await self._drop_question(inbound, approval_id)
                return Reply()
            case "details":
                return await self._details(approval_id)
            case "retry" | "confirm" | "resume":  # on a run in the daily list: its id
                move = {
                    "retry": (self.engine.retry, "retried"),  # a failed run
                    "confirm": (self.engine.confirm, "confirmed"),  # one stopped as uncertain
                    "resume": (self.engine.resume, "resumed"),  # a paused one
                }
                act, done = move[verb]
                view = await act(approval_id, actor)
                pressed = run_outcome(approval_id, done, actor, utcnow(), self.zone)
                return self._describe(view, Reply().add(pressed))
            case _:
                return Reply().say("That button has expired. /runs shows what is pending.")

    # -- decisions ---------------------------------------------------------------------

    async def decide(
        self,
        approval_id: str,
        approve: bool,
        actor: str,
        reason: str | None = None,
        edited_text: str | None = None,
    ) -> Reply:
        if edited_text is not None:
            edited_text = await self._as_drafted(approval_id, edited_text)
        decision = await self.engine.decide(approval_id, approve, actor, reason, edited_text)
        reply = self.decision_reply(decision)
        approval = decision.approval
        if approve and decision.decided_now and approval.status is ApprovalStatus.EXPIRED:
            # It came past the deadline: the gate expired, as its timer would have.
            reply.notice = f"Too late — {decision_line(approval, self.zone)}. Nothing was approved."
        return reply

    async def _as_drafted(self, approval_id: str, edited_text: str) -> str:
        """The new text from an Edit; the draft itself when it is the draft as the Edit
        showed it, unchanged (its bidi controls shown as marks, which the run would send
        in their place)."""
        approval = await self.ledger.get_approval(approval_id)
        draft = approval.card.get("text") if approval is not None else None
        return draft if isinstance(draft, str) and as_shown(edited_text, draft) else edited_text

    def decision_reply(self, decision: Decision) -> Reply:
        approval = decision.approval
        if approval.is_pending:  # escalated at its expiry: asked again, buttons and all
            reply = Reply().say(
                f"Nobody answered this in time, so I'm asking again ({approval.id})."
            )
            return reply.add(approval_card(approval, zone=self.zone))
        reply = Reply().add(outcome(approval, self.zone))
        if not decision.decided_now:
            decided = decision_line(approval, self.zone)
            reply.notice = f"Already decided — {decided}. Nothing changed."
            return reply
        if decision.view is not None:
            self._describe(decision.view, reply)
        return reply

    # -- runs --------------------------------------------------------------------------

    async def start_run(self, inbound: Inbound, process: str, values: dict[str, Any]) -> Reply:
        """Starts a run; the operator hears it started as soon as the run is recorded,
        and where it stopped (a card, say) when it gets there."""
        reply = Reply()

        def say_started(run: Run) -> Awaitable[None]:
            return reply.say(f"Started {run.process} as run {run.id}.").send_ahead()

        view = await self.engine.start(
            process,
            values,
            inbound.sender.key,
            reply_to=inbound.news_address,
            recording=say_started,
        )
        if self.history is not None:
            self.history.entities.forget()  # the run may be about a new client
        return self._describe(view, reply)

    def describe(self, view: RunView) -> Reply:
        return self._describe(view, Reply())

    def _describe(self, view: RunView, reply: Reply) -> Reply:
        run = view.run
        if view.approval is not None and view.approval.is_pending:
            reply.add(approval_card(view.approval, zone=self.zone))
        elif run.status is RunStatus.SUCCEEDED:
            reply.say(f"Run {run.id} ({run.process}) is done.")
        elif run.status is RunStatus.CANCELLED:
            reply.say(f"Run {run.id} ({run.process}) ended: {run.error or 'cancelled'}.")
        elif run.status is RunStatus.FAILED:
            advice = f"/retry {run.id} when it is fixed, or /cancel {run.id}"
            if run.error_class == "uncertain":
                advice = f"/confirm {run.id} if it happened, /retry {run.id} if not, or /cancel"
            reply.say(f"Run {run.id} failed ({run.error_class}): {run.error}\n{advice}")
        elif run.status is RunStatus.WAITING:
            reply.say(f"Run {run.id} is waiting at {run.current_step}.")
        else:
            reply.say(f"Run {run.id} is {run.status.value}.")
        return reply

    async def today_reply(self, show_all: bool = False, now: datetime | None = None) -> Reply:
        """The daily action list, on the operator's clock."""
        return (await self.today(show_all, now)).reply()

    async def today(self, show_all: bool = False, now: datetime | None = None) -> DailyList:
        return await daily_list(
            self.ledger, self.catalog, now or utcnow(), self.zone, self.budgets, show_all
        )

    async def budget_report(self) -> str:
        spending = await self.spending()
        if self.router.models is None and not spending.calls:
            return NO_MODEL
        return spending.report()

    async def spending(self) -> Spending:
        return await (self.budgets or Budgets(self.ledger, self.zone)).spending()

    async def runs_reply(self, show_all: bool = False) -> Reply:
        runs = await self.ledger.run_lines(None if show_all else ACTIVE, limit=RUNS_SHOWN + 1)
        older = runs[RUNS_SHOWN:]
        runs = runs[:RUNS_SHOWN]
        circuits = [f"⚠ {b.describe()}" for b in self.engine.effects.open_circuits()]
        if not runs:
            empty = "No runs in progress." if not show_all else "No runs yet."
            return Reply().say("\n".join([empty, *circuits]))
        left = await self.ledger.left_mid_step(runs)
        lines = []
        for run in runs:
            line = f"{run.id} · {run.process} · {run.status.value}"
            if run.id in left:
                line += f" · {LEFT_MID_STEP.format(run=run.id)}"
            if run.approval_id is not None:
                line += f" · approval {run.approval_id}: {run.approval_summary}"
            elif run.status is RunStatus.FAILED:
                line += f" · {run.error_class}: {run.error}"
            elif run.status is RunStatus.CANCELLED and run.error:
                line = f"{run.id} · {run.process} · ended: {run.error}"  # "rejected at …"
            elif run.current_step:
                line += f" · at {run.current_step}"
            lines.append(line)
        if older:
            listing = "steward runs --all" if show_all else "steward runs"
            lines.append(
                f"… and older ones: these are the newest {RUNS_SHOWN}. In a shell, "
                f"{listing} --limit N lists more; /today ranks what needs you."
            )
        return Reply().say("\n".join(lines + circuits))

    async def _details(self, approval_id: str) -> Reply:
        approval = await self.ledger.get_approval(approval_id)
        if approval is None:
            raise NotFound(f"no approval {approval_id!r}", "approvals")
        run = await self.ledger.get_run(approval.run_id)
        if run is None:
            raise NotFound(f"no run {approval.run_id!r}", "runs")
        reply = Reply().say(render_timeline(run, await timeline(self.ledger, run), self.zone))
        if approval.is_pending:
            spent = await self.ledger.model_spend(approval.run_id)
            reply.add(approval_card(approval, spent, self.zone))
        else:
            reply.say(decision_line(approval, self.zone))
        return reply

    def _processes(self) -> str:
        lines = []
        for definition in self.catalog:
            inputs = ", ".join(f"{n} ({s.type.value})" for n, s in definition.inputs.items())
            inputs = inputs or "none"
            lines.append(f"{definition.name} — {definition.description}\n  inputs: {inputs}")
        lines += [f"Skipped at the start: {problem}" for problem in self.catalog.problems]
        return "\n".join(lines) or "No processes are defined."

    # -- tier 1 and 2: free text, and questions in flight ------------------------------

    async def _run_command(self, inbound: Inbound, rest: str) -> Reply:
        positional, named = parse_arguments(rest, strict=True)
        if not positional:
            return Reply().say("Which process? " + ", ".join(d.name for d in self.catalog))
        definition = self.engine.definition(positional[0].lower())
        if len(positional) > 1:  # client=Acme Corp: "Corp" would be lost
            return Reply().say(
                f"{positional[1]!r} is not an input: write inputs as key=value, and put a "
                'value with spaces in quotes (client="Acme Corp").'
            )
        values, errors = {}, []
        unknown = sorted(set(named) - set(definition.inputs))
        if unknown:
            return Reply().say(
                f"{definition.name} has no input {unknown[0]!r}; its inputs are "
                + ", ".join(definition.inputs)
            )
        skipped = [key for key, raw in named.items() if definition.left_out(key, raw)]
        for key, raw in named.items():
            if key in skipped:  # given empty: not asked for either
                continue
            try:
                values[key] = self.engine.read_input(definition, key, raw)
            except InputError as exc:
                errors.append(str(exc))
        if errors:
            return Reply().say("\n".join(errors))
        return await self._continue_form(inbound, definition, values, skipped)

    async def _free_text(self, inbound: Inbound, text: str) -> Reply:
        if not text:
            return Reply().say(HELP)
        route = None
        if not plainly_a_question(text):  # "did we onboard Acme?" asks; it starts nothing
            now = self._now()
            route = self.router.by_rules(text, now) or await self.router.by_model(text, now)
        if route is None:
            names = ", ".join(d.name for d in self.catalog)
            if self._asks_history(text):  # and memory had nothing on it
                opening = f"{NOTHING} "
            else:
                opening = "Noted; ask me about it any time. " if self.history is not None else ""
            return Reply().say(
                f"{opening}{NOT_SURE} I can run: {names}.\n"
                "Say e.g. /run onboarding, or /help for everything I can do."
            )
        told = "".join(f"{problem}.\n" for problem in route.refused.values())
        return await self._continue_form(
            inbound, route.process, route.values, again=list(route.refused), told=told
        )

    async def _continue_form(
        self,
        inbound: Inbound,
        definition: ProcessDefinition,
        values: dict[str, Any],
        skipped: list[str] | None = None,
        again: list[str] | None = None,
        told: str = "",
    ) -> Reply:
        """Asks for the next input the run needs, or starts it. An input in ``again``,
        given wrong (a date that has passed), is asked for even where a start without it
        would not ask (an optional one): the operator meant to give it."""
        skipped, again = skipped or [], again or []
        for name, spec in definition.inputs.items():  # a default fills in when it starts
            if name not in values and name not in skipped and (spec.asked or name in again):
                form = {"process": definition.name, "values": values, "skipped": skipped}
                asking = {"type": "form", **form, "again": again, "asking": name}
                await self._ask(inbound, asking)
                question = spec.question or f"What is the {name.replace('_', ' ')}?"
                intro = "" if values or skipped or told else f"Starting {definition.title}. "
                way_out = "/cancel to stop" if spec.required else "/skip if none, /cancel to stop"
                return Reply().say(f"{told}{intro}{question} ({way_out})")
        await self.memory.delete(self._question_key(inbound))
        try:
            return await self.start_run(inbound, definition.name, values)
        except InputProblem as exc:
            return Reply().say(str(exc))

    async def _answer(self, inbound: Inbound, pending: dict[str, Any], text: str) -> Reply:
        actor = inbound.sender.key
        if pending["type"] == "form":
            if (asked := await self._asked_input(inbound, pending)) is None:
                return Reply().say(self._dropped_form(pending["process"]))
            definition, field, spec = asked
            if not spec.required and spec.type in WORDS and text.lower().strip(".!") in NONE:
                return await self._skip_input(inbound, pending)  # "none", as asked
            try:
                value = self.engine.read_input(definition, field, text)
            except InputError as exc:
                await self._ask(inbound, pending)  # anew: the next message may answer it
                return Reply().say(f"{exc}. Try again, or /cancel.")
            values = {**pending["values"], field: value}
            return await self._continue_form(
                inbound, definition, values, pending.get("skipped", []), pending.get("again")
            )
        if pending["type"] == "edit" and not text:
            await self._ask(inbound, pending)  # anew: the next message may answer it
            return Reply().say("Send the new text, or /cancel to keep the card as it is.")
        if pending["type"] == "edit":
            return await self._new_text(inbound, pending, text)
        await self.memory.delete(self._question_key(inbound))
        if pending["type"] == "reason":
            await self.ledger.add_reason(pending["approval"], text, actor)
            return Reply().say("Noted.")
        return await self._free_text(inbound, text)

    async def _new_text(self, inbound: Inbound, pending: dict[str, Any], text: str) -> Reply:
        """The new text for an Edit, typed in chat. It is shown whole before it goes, and
        only ``yes`` approves the card with it: in chat, any message may answer the
        question (a word meant for a colleague, a command typed without its slash).
        Every other message is added to it, a paragraph each, as a platform sends a long
        text in parts; while a part fills a whole message (``may_go_on``), more may
        come, and it is shown once they stop or on ``done``. Kept PARTS_TTL."""
        approval_id = pending["approval"]
        approval = await self.ledger.get_approval(approval_id)
        if approval is None or not approval.is_pending:  # decided meanwhile, elsewhere
            await self._drop_question(inbound, approval_id)
            decided = decision_line(approval, self.zone) if approval else "The card is gone"
            return Reply().say(f"{decided}, so this text was not used.")
        parts: list[str] = pending.get("parts", [])
        word = text.lower().rstrip(".!").lstrip("/")
        if parts and word in ("yes", "y"):
            whole = "\n\n".join(parts)
            reply = await self.decide(approval_id, True, inbound.sender.key, edited_text=whole)
            await self._drop_question(inbound, approval_id)  # once decided, not before
            return reply
        if not (parts and word == "done"):
            parts = [*parts, text]
        await self._ask(inbound, {**pending, "parts": parts}, PARTS_TTL)
        if inbound.may_go_on:
            got = f"{len(parts)} parts" if len(parts) > 1 else "1 part"
            return Reply().say(
                f"Got {got} of the new text: it fills a whole message, so more may come. "
                "Send the rest (done when it is all there)."
            )
        whole = "\n\n".join(parts)
        size = f"{len(whole):,} characters" + (f", {len(parts)} parts" if len(parts) > 1 else "")
        return Reply().say(f"The new text ({size}):").quote(whole).say(ASK_YES)

    async def _skip_input(self, inbound: Inbound, pending: dict[str, Any]) -> Reply:
        if (asked := await self._asked_input(inbound, pending)) is None:
            return Reply().say(self._dropped_form(pending["process"]))
        definition, field, spec = asked
        if spec.required:
            await self._ask(inbound, pending)  # anew: the next message may answer it
            return Reply().say(
                f"{definition.title} needs the {field.replace('_', ' ')}: answer it, or /cancel."
            )
        skipped = [*pending.get("skipped", []), field]
        return await self._continue_form(
            inbound, definition, pending["values"], skipped, pending.get("again")
        )

    async def _asked_input(
        self, inbound: Inbound, pending: dict[str, Any]
    ) -> tuple[ProcessDefinition, str, InputSpec] | None:
        """The process and the input a form asks for; None, and the form dropped, when a
        start since read a definition without them (working memory kept the form)."""
        field = pending["asking"]
        definition = self.catalog.get(pending["process"])
        if definition is None or field not in definition.inputs:
            await self.memory.delete(self._question_key(inbound))
            return None
        return definition, field, definition.inputs[field]

    def _dropped_form(self, process: str) -> str:
        if self.catalog.get(process) is None:
            names = ", ".join(d.name for d in self.catalog)
            return (
                f"There is no {process} process any more, so I dropped that question. "
                f"I can run: {names}."
            )
        return (
            f"The {process} process changed since I asked, so I dropped that question: "
            f"/run {process} to start again."
        )

    async def _cancel_question(self, inbound: Inbound) -> Reply:
        key = self._question_key(inbound)
        if await self.memory.get(key) is None:
            return Reply().say("Nothing to cancel. To cancel a run: /cancel RUN (see /runs).")
        await self.memory.delete(key)
        return Reply().say("Okay, dropped it.")

    async def form_opened(self, inbound: Inbound, approval_id: str) -> None:
        """An edit prompt went out as a form: its text comes as ``edited:``, not in chat."""
        await self._drop_question(inbound, approval_id)

    async def _drop_question(self, inbound: Inbound, approval_id: str) -> None:
        """Forgets the question about ``approval_id``'s text, and no other."""
        key = self._question_key(inbound)
        pending = await self.memory.get(key)
        if pending is not None and pending.get("approval") == approval_id:
            await self.memory.delete(key)

    async def awaits_answer(self, inbound: Inbound) -> str | None:
        """The id of the question to ``inbound``'s sender in its chat that waits for its
        answer (each asking has its own); None when none waits."""
        pending = await self.memory.get(self._question_key(inbound))
        if pending is None:
            return None
        if "asked" in pending:
            return str(pending["asked"])
        kept = json.dumps(pending, sort_keys=True, default=str)  # asked before ids were kept
        return hashlib.sha256(kept.encode()).hexdigest()[:32]

    async def _ask(
        self, inbound: Inbound, question: dict[str, Any], ttl: float = QUESTION_TTL
    ) -> None:
        asked = {**question, "asked": uuid.uuid4().hex}
        await self.memory.set(self._question_key(inbound), asked, ttl)

    @staticmethod
    def _question_key(inbound: Inbound) -> str:
        return f"question:{inbound.sender.key}:{inbound.chat_id}"

    @staticmethod
    def _turns_key(inbound: Inbound) -> str:
        return f"turns:{inbound.sender.key}:{inbound.chat_id}"


def _takes_an_id(name: str, args: list[str]) -> bool:
    """``args`` begin with the id command ``name`` takes, and are as many as it takes."""
    if name not in BY_ID:
        return False
    is_id, count = BY_ID[name]
    return is_id(args[0].lower()) and (count is None or len(args) == count)


def _one_id(text: str, command: str) -> str:
    parts = text.split()
    if len(parts) != 1:
        raise StewardError(f"Usage: /{command} ID (see /runs for ids)")
    return parts[0].lower()
