"""The invoice follow-up as an operator runs it from chat: the amount owed as the client
reads it, in its currency, on the card, in the email and in the daily list."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.app import Steward
from bot.settings import load_settings
from graph.engine import InputProblem, ProcessEngine
from graph.errors import NothingPaid, PaymentInAnotherCurrency, PaymentInTwoCurrencies
from graph.timeline import timeline
from memory.ledger import KeptEvent, RunStatus, utcnow
from tests.graph.test_coordinator import only_card, outbox, send

ORDER = "/run invoice_followup client=Acme email=ap@acme.com invoice=INV-7 due_date=2026-11-01"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Steward]:
    settings = load_settings(home=tmp_path / "home", operators="telegram:42")
    async with Steward.open(settings) as steward:
        yield steward


async def reminded(app: Steward, amount: str) -> tuple[str, str]:
    """Starts a follow-up owed ``amount`` from chat and approves its reminder: the card's
    text and the email sent."""
    card = only_card(await send(app, f"{ORDER} amount={amount}"))
    shown = "\n".join([card.summary, *(f"{k}: {v}" for k, v in card.fields), card.text or ""])
    await send(app, button=f"approve:{card.approval_id}")
    (sent,) = outbox(app)
    return shown, sent["params"]["body"]


async def daily(app: Steward) -> str:
    """The daily list as the operator reads it: its lines and its items' cards."""
    reply = await app.coordinator.today_reply()
    return "\n".join([*reply.texts, *(f"{c.title}\n{c.summary}" for c in reply.cards)])


@pytest.mark.parametrize("amount", ["€2,500", '"2500 EUR"', "2500euros"])
async def test_the_client_reads_the_amount_with_its_currency(app: Steward, amount: str) -> None:
    """ "€2,500" was "2500.00" on the card and in the email, its currency dropped."""
    shown, body = await reminded(app, amount)
    assert "invoice INV-7 (€2,500.00) to ap@acme.com" in shown
    assert "Amount: €2,500.00" in shown
    assert "invoice INV-7 for €2,500.00 was due" in body
    assert "2500" not in shown + body


@pytest.mark.parametrize("amount", ["0", "€0.00", "0,00EUR"])
async def test_an_invoice_of_nothing_is_not_chased(app: Steward, amount: str) -> None:
    """An invoice of 0 started a follow-up whose reminder asked the client to pay 0.00."""
    reply = "\n".join((await send(app, f"{ORDER} amount={amount}")).texts)
    assert "amount: an amount owed of nothing has nothing to chase" in reply
    assert await app.ledger.list_runs() == []
    only_card(await send(app, f"{ORDER} amount=2500"))
    [run] = await app.ledger.list_runs()
    with pytest.raises(InputProblem, match="an amount owed of nothing has nothing to chase"):
        await app.engine.replay(run.id, "overdue", {"amount": amount}, "telegram:42")


async def test_an_invoice_of_nothing_given_as_an_answer_is_asked_for_again(app: Steward) -> None:
    assert "How much is due?" in "\n".join((await send(app, ORDER)).texts)
    reply = "\n".join((await send(app, "0")).texts)
    assert "an amount owed of nothing has nothing to chase, got '0'. Try again" in reply
    only_card(await send(app, "2500"))


async def test_an_invoice_of_nothing_said_in_words_is_asked_for(app: Steward) -> None:
    """Said in plain words, an amount of nothing was taken as read and the start then
    refused it: the whole request was dropped, its client and email with it. It is a
    wrong guess, as an unreadable amount is: the form asks for it."""
    said = "chase unpaid invoice INV-9 for Acme (ap@acme.com) of €0 due 2026-11-01"
    reply = "\n".join((await send(app, said)).texts)
    assert "How much is due?" in reply and "nothing to chase" not in reply
    card = only_card(await send(app, "2500"))
    assert dict(card.fields)["Invoice"] == "INV-9" and dict(card.fields)["Client"] == "Acme"


async def test_the_daily_list_names_the_currency_at_stake(app: Steward) -> None:
    await send(app, f"{ORDER} amount=$1200")
    today = await daily(app)
    assert "$1,200.00 at stake" in today


async def test_an_amount_without_a_currency_is_in_steward_currency(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", operators="telegram:42", currency="eur")
    async with Steward.open(settings) as app:
        _, body = await reminded(app, "2500")
        given = only_card(await send(app, ORDER.replace("INV-7", "INV-8") + " amount=$90"))
    assert "for €2,500.00 was due" in body
    assert dict(given.fields)["Amount"] == "$90.00"


async def test_an_amount_without_a_currency_and_none_set_gets_none_made_up(
    app: Steward,
) -> None:
    shown, body = await reminded(app, "2500")
    assert "Amount: 2,500.00" in shown and "for 2,500.00 was due" in body


async def test_an_amount_in_no_currency_is_paid_in_the_currency_of_its_first_payment(
    app: Steward,
) -> None:
    """2,500 owed in no currency (STEWARD_CURRENCY unset), $1,000 paid, then €1,000: the
    two were added up, "2,000.00" paid and "500.00" still owed, dollars and euros as
    one. The first payment's currency is the rest's: $1,500.00 is still owed, and euros
    count for nothing."""
    card = only_card(await send(app, f"{ORDER} amount=2500"))
    await send(app, button=f"approve:{card.approval_id}")
    run_id = (await app.ledger.get_approval(card.approval_id)).run_id  # type: ignore[union-attr]
    part = await send(app, f"/paid {run_id} $1000")
    assert part.texts[0] == f"Recorded for run {run_id}: $1,000.00 paid."
    balance = only_card(part)
    assert dict(balance.fields)["Paid so far"] == "$1,000.00"
    assert dict(balance.fields)["Still owed"] == "$1,500.00"
    await send(app, button=f"approve:{balance.approval_id}")
    refused = await send(app, f"/paid {run_id} €1000")
    assert refused.texts == [
        f"Run {run_id} counts none of it: the payment pays in EUR (€1000), where USD is "
        "owed: steward converts none. Nothing changed."
    ]
    rest = await send(app, f"/paid {run_id} 1500")
    assert rest.texts == [
        f"Recorded for run {run_id}: $1,500.00 paid.",
        f"Run {run_id} (invoice_followup) is done.",
    ]


async def test_a_run_that_kept_a_bare_amount_reads_on(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run started before amounts kept their currency holds "2500.00" in its inputs and
    its checkpoint: its next reminder, the daily list and a payment's match read it."""
    kept_bare = ProcessEngine.validate_inputs

    def as_before(engine: ProcessEngine, definition: Any, raw: dict[str, Any]) -> Any:
        return {**kept_bare(engine, definition, raw), "amount": "2500.00"}

    with monkeypatch.context() as before:
        before.setattr(ProcessEngine, "validate_inputs", as_before)
        card = only_card(await send(app, f"{ORDER} amount=2500"))
    run_id = (await app.ledger.get_approval(card.approval_id)).run_id  # type: ignore[union-attr]
    assert (await app.ledger.get_run(run_id)).inputs["amount"] == "2500.00"  # type: ignore[union-attr]
    await send(app, button=f"approve:{card.approval_id}")
    timer = await app.ledger.open_wait(run_id)
    assert timer is not None
    await app.engine.fire_timer(timer, "test")  # no payment in a week: a second reminder
    again = await app.engine.view(run_id)
    assert again.approval is not None
    assert again.approval.card["fields"]["Amount"] == "2,500.00"
    today = await daily(app)
    assert "2,500.00 at stake" in today
    await send(app, button=f"approve:{again.approval.id}")
    assert "for 2,500.00 was due" in outbox(app)[-1]["params"]["body"]
    view = await app.engine.view(run_id)
    assert view.run.status is RunStatus.WAITING


@pytest.mark.parametrize("days", [0, 10])
async def test_a_reminder_before_the_due_date_says_it_is_due(app: Steward, days: int) -> None:
    """A due date still to come was taken, and the client was told the invoice "was due
    on" it."""
    due = (datetime.now(UTC).date() + timedelta(days=days)).isoformat()
    order = ORDER.replace("due_date=2026-11-01", f"due_date={due}")
    card = only_card(await send(app, f"{order} amount=€2,500"))
    assert card.text is not None and "was due" not in card.text
    assert f"invoice INV-7 for €2,500.00 is due on {due}." in card.text
    await send(app, button=f"approve:{card.approval_id}")
    (sent,) = outbox(app)
    assert f"for €2,500.00 is due on {due}." in sent["params"]["body"]


async def test_a_due_date_replayed_chooses_the_wording_again(app: Steward) -> None:
    """Corrected to a date to come, an overdue reminder is drafted again as one coming due:
    the replay goes back to the step that chose the wording, not to the draft it skipped."""
    card = only_card(await send(app, f"{ORDER} amount=€2,500"))
    run_id = (await app.ledger.get_approval(card.approval_id)).run_id  # type: ignore[union-attr]
    due = (datetime.now(UTC).date() + timedelta(days=10)).isoformat()
    refused = await send(app, f"/replay {run_id} approve_reminder due_date={due}")
    assert (
        "overdue chose its draft by the inputs you change, before approve_reminder: "
        f"/replay {run_id} overdue due_date={due}, so that it drafts again"
    ) in "\n".join(refused.texts)
    again = await send(app, f"/replay {run_id} overdue due_date={due}")
    assert f"for €2,500.00 is due on {due}." in (only_card(again).text or "")


@pytest.mark.parametrize(
    ("payment", "said"),
    [
        ({"amount": "1000", "currency": "USD"}, "pays in USD (1000), where EUR is owed"),
        ({"amount": "$1,000"}, "pays in USD ($1,000), where EUR is owed"),
        ({"amount": 1000, "currency": "CHF"}, "pays in CHF (1000), where EUR is owed"),
        ({"amount": "1000", "currency": "yen\u202e"}, "pays in 'yen\\u202e' (1000), where EUR"),
    ],
)
async def test_a_payment_in_another_currency_counts_for_nothing(
    app: Steward, payment: dict[str, Any], said: str
) -> None:
    """$1,000 of a €2,500 invoice ended the follow-up as paid, nothing converted and the
    operator told nothing. Now it counts for nothing, the run waits on, and the refusal
    is audited with what the payment said."""
    card = only_card(await send(app, f"{ORDER} amount=€2,500"))
    await send(app, button=f"approve:{card.approval_id}")
    run_id = (await app.ledger.get_approval(card.approval_id)).run_id  # type: ignore[union-attr]
    with pytest.raises(PaymentInAnotherCurrency, match=re.escape(said)):
        await app.engine.offer_event(run_id, "payment", {"invoice": "INV-7", **payment}, "hook:p")
    view = await app.engine.view(run_id)
    assert view.run.status is RunStatus.WAITING
    assert view.run.current_step == "wait_for_payment"
    (audited,) = [e for e in await app.ledger.audit_events() if e.kind == "run.payment_uncounted"]
    assert (audited.actor, audited.subject) == ("hook:p", run_id)
    assert said in audited.data["said"]
    assert (await app.ledger.verify_audit()).ok


async def test_paid_with_an_amount_it_cannot_read_says_how_to_write_one(app: Steward) -> None:
    """ "/paid RUN 1.000" was told amounts read like "1000.00, 1,000.00 or €1,000": not
    that a decimal comma reads, nor why 1.000 does not."""
    card = only_card(await send(app, f"{ORDER} amount=€2,500"))
    await send(app, button=f"approve:{card.approval_id}")
    run_id = (await app.ledger.get_approval(card.approval_id)).run_id  # type: ignore[union-attr]
    told = "\n".join((await send(app, f"/paid {run_id} 1.000")).texts)
    assert "1.000,00" in told
    assert "1.000 alone is 1,000 to some and 1.00 to others: write 1000 or 1,00." in told
    told = "\n".join((await send(app, f"/paid {run_id} 1,00")).texts)
    assert f"Recorded for run {run_id}: €1.00 paid." in told  # as read, not as typed


@pytest.mark.parametrize("amount", ["0", 0, "€0.00", "0,00 EUR"])
async def test_a_payment_of_nothing_counts_for_nothing(app: Steward, amount: object) -> None:
    """A payment of 0 was a part paid: the run drafted a reminder thanking the client
    "for your payment of €0.00" and asking for all €2,500.00 again."""
    card = only_card(await send(app, f"{ORDER} amount=€2,500"))
    await send(app, button=f"approve:{card.approval_id}")
    run_id = (await app.ledger.get_approval(card.approval_id)).run_id  # type: ignore[union-attr]
    payment = {"invoice": "INV-7", "amount": amount}
    with pytest.raises(NothingPaid, match="pays nothing"):
        await app.engine.offer_event(run_id, "payment", payment, "hook:p")
    view = await app.engine.view(run_id)
    assert view.run.status is RunStatus.WAITING and view.approval is None
    (audited,) = [e for e in await app.ledger.audit_events() if e.kind == "run.payment_uncounted"]
    assert "pays nothing" in audited.data["said"]
    told = "\n".join((await send(app, f"/paid {run_id} 0")).texts)
    assert f"Run {run_id} counts none of it: the payment pays nothing" in told
    assert (await app.engine.view(run_id)).approval is None


@pytest.mark.parametrize(
    ("payment", "said"),
    [
        ({"amount": "€1,000", "currency": "USD"}, "its amount '€1,000' and its currency 'USD'"),
        ({"amount": "1000 EUR", "currency": "$"}, "its amount '1000 EUR' and its currency '$'"),
        ({"amount": "€1,000", "currency": "CHF"}, "its amount '€1,000' and its currency 'CHF'"),
    ],
)
async def test_a_payment_naming_two_currencies_counts_for_nothing(
    app: Steward, payment: dict[str, Any], said: str
) -> None:
    """ "€1,000" with "currency": "USD" counted as €1,000.00 of €2,500.00 paid, the
    amount's sign taken over the currency named beside it, without a word."""
    card = only_card(await send(app, f"{ORDER} amount=€2,500"))
    await send(app, button=f"approve:{card.approval_id}")
    run_id = (await app.ledger.get_approval(card.approval_id)).run_id  # type: ignore[union-attr]
    with pytest.raises(PaymentInTwoCurrencies, match=re.escape(said)):
        await app.engine.offer_event(run_id, "payment", {"invoice": "INV-7", **payment}, "hook:p")
    view = await app.engine.view(run_id)
    assert view.run.status is RunStatus.WAITING and view.approval is None
    (audited,) = [e for e in await app.ledger.audit_events() if e.kind == "run.payment_uncounted"]
    assert said in audited.data["said"]
    agreeing = {"invoice": "INV-7", "amount": "€1,000", "currency": "eur"}
    await app.engine.offer_event(run_id, "payment", agreeing, "hook:p")
    again = (await app.engine.view(run_id)).approval
    assert again is not None and again.card["fields"]["Still owed"] == "€1,500.00"


@pytest.mark.parametrize(
    ("kept", "paid_so_far"),
    [
        ([{"amount": "1.000"}], None),  # 1,000 or 1.00
        ([{"amount": "1000", "currency": "USD"}], None),
        ([{"amount": "1000"}, {"amount": "-500"}], "€1,000.00"),
    ],
)
async def test_a_payment_kept_before_it_would_be_refused_counts_for_nothing(
    app: Steward, kept: list[dict[str, Any]], paid_so_far: str | None
) -> None:
    """A payment kept for a run before steward refused those it cannot count (an amount
    it cannot read, another currency) was taken, as the run came to its wait, for all of
    it paid: the follow-up ended. Now it counts for nothing, the run chases what is owed
    with a reminder for approval, and its timeline says what did not count."""
    card = only_card(await send(app, f"{ORDER} amount=€2,500"))
    run_id = (await app.ledger.get_approval(card.approval_id)).run_id  # type: ignore[union-attr]
    for payment in kept:  # kept as a steward before this change kept it, unchecked
        as_kept = KeptEvent("payment", {"invoice": "INV-7", **payment}, "hook:p", utcnow())
        await app.ledger.write(lambda tx, event=as_kept: tx.keep_event(run_id, event))
    await send(app, button=f"approve:{card.approval_id}")
    view = await app.engine.view(run_id)
    assert view.run.status is RunStatus.WAITING
    assert view.approval is not None and view.approval.step_id == "approve_reminder"
    assert view.approval.card["fields"].get("Paid so far") == paid_so_far
    (woke,) = [row.decision for row in await timeline(app.ledger, view.run) if row.kind == "wait"]
    assert "a payment that counted for nothing" in woke
    assert len(outbox(app)) == 1


async def test_what_is_still_owed_follows_an_amount_replayed(app: Steward) -> None:
    """€1,000 of €2,500 paid, the amount corrected to €3,000: the card said €1,500.00 was
    still owed, what was left of the amount before, until the next payment."""
    card = only_card(await send(app, f"{ORDER} amount=€2,500"))
    await send(app, button=f"approve:{card.approval_id}")
    run_id = (await app.ledger.get_approval(card.approval_id)).run_id  # type: ignore[union-attr]
    part = {"invoice": "INV-7", "amount": "1000"}
    await app.engine.offer_event(run_id, "payment", part, "hook:payments")
    again = only_card(await send(app, f"/replay {run_id} overdue amount=€3,000"))
    assert dict(again.fields)["Amount"] == "€3,000.00"
    assert dict(again.fields)["Paid so far"] == "€1,000.00"
    assert dict(again.fields)["Still owed"] == "€2,000.00"


async def test_an_amount_replayed_in_another_currency_than_paid_is_refused(app: Steward) -> None:
    """€1,000 of €2,500 paid, the amount corrected to $3,000: the card said $2,000.00
    was still owed (dollars less euros, steward converting none), its reminder asked
    the client for it, and $2,000 paid ended the run as paid in full. The replay is
    refused, and nothing changes; in euros it goes on."""
    card = only_card(await send(app, f"{ORDER} amount=€2,500"))
    await send(app, button=f"approve:{card.approval_id}")
    run_id = (await app.ledger.get_approval(card.approval_id)).run_id  # type: ignore[union-attr]
    balance = only_card(await send(app, f"/paid {run_id} €1000"))
    refused = await send(app, f"/replay {run_id} overdue amount=$3,000")
    assert refused.texts == [
        "amount cannot be $3,000.00: €1,000.00 of it is paid, in EUR, and steward converts "
        f"no currency. Give it in EUR, or /cancel {run_id}"
    ]
    run = await app.ledger.get_run(run_id)
    assert run is not None and run.inputs["amount"] == "€2,500.00"
    pending = (await app.engine.view(run_id)).approval
    assert pending is not None and pending.id == balance.approval_id
    again = only_card(await send(app, f"/replay {run_id} overdue amount=3000EUR"))
    assert dict(again.fields)["Still owed"] == "€2,000.00"


async def test_payments_kept_while_the_reminder_waited_are_all_counted(app: Steward) -> None:
    """€1,000 and then €1,500 came while the reminder waited for approval: the wait took
    the first alone, and the next card said €1,500.00 was still owed, all of it paid, for
    a reminder asking the client for it again."""
    card = only_card(await send(app, f"{ORDER} amount=€2,500"))
    run_id = (await app.ledger.get_approval(card.approval_id)).run_id  # type: ignore[union-attr]
    for amount in ("1000", "1500"):
        payment = {"invoice": "INV-7", "amount": amount}
        assert await app.engine.offer_event(run_id, "payment", payment, "hook:payments") is None
    await send(app, button=f"approve:{card.approval_id}")
    view = await app.engine.view(run_id)
    assert view.approval is None
    assert view.run.status is RunStatus.SUCCEEDED
    assert len(outbox(app)) == 1


async def test_part_payments_kept_while_the_reminder_waited_are_added_up(app: Steward) -> None:
    card = only_card(await send(app, f"{ORDER} amount=€2,500"))
    run_id = (await app.ledger.get_approval(card.approval_id)).run_id  # type: ignore[union-attr]
    for amount in ("1000", "200"):
        payment = {"invoice": "INV-7", "amount": amount}
        await app.engine.offer_event(run_id, "payment", payment, "hook:payments")
    await send(app, button=f"approve:{card.approval_id}")
    again = (await app.engine.view(run_id)).approval
    assert again is not None
    assert again.card["fields"]["Paid so far"] == "€1,200.00"
    assert again.card["fields"]["Still owed"] == "€1,300.00"


async def test_a_due_date_replayed_after_a_part_payment_keeps_the_reminder_of_the_rest(
    app: Steward,
) -> None:
    """€1,000 of €2,500 paid, the due date corrected: the replay was sent back to
    overdue, which chose the first reminder by the due date, and it drafted the overdue
    one, asking the client for all €2,500.00 again. The reminder of what is still owed
    names no due date, and no branch on it chose that draft: the card asks again with the
    due date corrected and the same reminder."""
    card = only_card(await send(app, f"{ORDER} amount=€2,500"))
    await send(app, button=f"approve:{card.approval_id}")
    run_id = (await app.ledger.get_approval(card.approval_id)).run_id  # type: ignore[union-attr]
    part = {"invoice": "INV-7", "amount": "1000"}
    await app.engine.offer_event(run_id, "payment", part, "hook:payments")
    again = only_card(await send(app, f"/replay {run_id} approve_reminder due_date=2026-11-15"))
    assert dict(again.fields)["Due"] == "2026-11-15"
    assert dict(again.fields)["Still owed"] == "€1,500.00"
    assert "The remaining €1,500.00 is still to be paid" in (again.text or "")
    await send(app, button=f"approve:{again.approval_id}")
    sent = [email["params"]["body"] for email in outbox(app)]
    assert len(sent) == 2 and sum("The remaining €1,500.00" in body for body in sent) == 1


@pytest.mark.parametrize("days", [-30, 10])  # overdue, or coming due
async def test_overdue_replayed_after_a_part_payment_drafts_the_reminder_of_the_rest(
    app: Steward, days: int
) -> None:
    """€1,000 of €2,500 paid, the run replayed from overdue: it drafted the first
    reminder again, asking the client for all €2,500.00 ("was due on …", or "is due
    on …"), under a card that said €1,500.00 was still owed. The branch counts what is
    paid: the reminder thanks the client for it and asks for the rest."""
    due = (datetime.now(UTC).date() + timedelta(days=days)).isoformat()
    order = ORDER.replace("due_date=2026-11-01", f"due_date={due}")
    card = only_card(await send(app, f"{order} amount=€2,500"))
    await send(app, button=f"approve:{card.approval_id}")
    run_id = (await app.ledger.get_approval(card.approval_id)).run_id  # type: ignore[union-attr]
    part = {"invoice": "INV-7", "amount": "1000"}
    await app.engine.offer_event(run_id, "payment", part, "hook:payments")
    again = only_card(await send(app, f"/replay {run_id} overdue"))
    assert dict(again.fields)["Still owed"] == "€1,500.00"
    assert "Thank you for your payment of €1,000.00" in (again.text or "")
    assert "The remaining €1,500.00 is still to be paid" in (again.text or "")
    assert "€2,500.00 was due" not in (again.text or "")
    assert "€2,500.00 is due" not in (again.text or "")
    corrected = only_card(await send(app, f"/replay {run_id} overdue amount=€3,000"))
    assert "The remaining €2,000.00 is still to be paid" in (corrected.text or "")
    await send(app, button=f"approve:{corrected.approval_id}")
    await app.engine.offer_event(run_id, "payment", {"invoice": "INV-7"}, "hook:payments")
    done = await send(app, f"/replay {run_id} overdue")  # all of it paid: nothing to remind of
    assert done.cards == [] and done.texts[-1] == f"Run {run_id} (invoice_followup) is done."


async def test_the_first_reminder_replayed_after_a_part_payment_says_how_to_draft_the_rest(
    app: Steward,
) -> None:
    """€1,000 of €2,500 paid, the card asked for the €1,500.00 still owed: /replay RUN
    draft_reminder drafted the first reminder again, asking the client for all €2,500.00
    under a card that said €1,500.00 was still owed. It is not the draft the run shows:
    the replay is refused, naming the draft it shows, the reminder of the rest."""
    card = only_card(await send(app, f"{ORDER} amount=€2,500"))
    await send(app, button=f"approve:{card.approval_id}")
    run_id = (await app.ledger.get_approval(card.approval_id)).run_id  # type: ignore[union-attr]
    balance = only_card(await send(app, f"/paid {run_id} 1000"))
    refused = await send(app, f"/replay {run_id} draft_reminder")
    assert refused.texts == [
        f"draft_reminder is not the draft run {run_id} shows (its reminder_text is "
        f"draft_balance's, as its steps chose): /replay {run_id} draft_balance, so that it "
        "drafts again"
    ]
    refused = await send(app, f"/replay {run_id} draft_reminder contact=Jo")
    assert refused.texts == [
        f"draft_reminder is not the draft run {run_id} shows (its reminder_text is "
        f"draft_balance's, as its steps chose): /replay {run_id} draft_balance contact=Jo, "
        "so that it drafts again"
    ]
    pending = (await app.engine.view(run_id)).approval
    assert pending is not None and pending.id == balance.approval_id
    again = only_card(await send(app, f"/replay {run_id} draft_balance contact=Jo"))
    assert dict(again.fields)["Still owed"] == "€1,500.00"
    assert (again.text or "").startswith("Hello Jo,\n\nThank you for your payment of €1,000.00")
    assert "The remaining €1,500.00 is still to be paid" in (again.text or "")


async def test_a_draft_replayed_alone_is_still_the_one_its_branch_chose(app: Steward) -> None:
    """The reminder of a payment coming due, replayed from its draft for a new greeting,
    is still the one overdue chose by the due date: a due date corrected to one passed
    replays overdue, so that the overdue reminder is drafted."""
    due = (datetime.now(UTC).date() + timedelta(days=10)).isoformat()
    order = ORDER.replace("due_date=2026-11-01", f"due_date={due}")
    card = only_card(await send(app, f"{order} amount=€2,500"))
    run_id = (await app.ledger.get_approval(card.approval_id)).run_id  # type: ignore[union-attr]
    await send(app, f"/replay {run_id} draft_upcoming contact=Jo")
    replayed = await send(app, f"/replay {run_id} approve_reminder due_date=2026-11-01")
    refused = "\n".join(replayed.texts)
    assert f"/replay {run_id} overdue due_date=2026-11-01, so that it drafts again" in refused


async def test_a_replay_names_the_draft_the_card_shows(app: Steward) -> None:
    """Drafted as coming due, then replayed overdue, the reminder was the overdue one: a
    change to the greeting named the first draft the run had taken, whose replay would
    have told the client the overdue invoice "is due on" its date."""
    due = (datetime.now(UTC).date() + timedelta(days=10)).isoformat()
    order = ORDER.replace("due_date=2026-11-01", f"due_date={due}")
    card = only_card(await send(app, f"{order} amount=€2,500"))
    run_id = (await app.ledger.get_approval(card.approval_id)).run_id  # type: ignore[union-attr]
    await send(app, f"/replay {run_id} overdue due_date=2026-11-01")
    refused = "\n".join((await send(app, f"/replay {run_id} approve_reminder contact=Jo")).texts)
    assert f"/replay {run_id} draft_reminder contact=Jo, so that it drafts again" in refused
    again = only_card(await send(app, f"/replay {run_id} draft_reminder contact=Jo"))
    assert "Hello Jo," in (again.text or "") and "was due on 2026-11-01" in (again.text or "")


async def test_the_daily_list_shows_what_is_still_owed_at_stake(app: Steward) -> None:
    """€1,000 of €2,500 paid, the daily list said "€2,500.00 at stake", the whole
    invoice, beside a card asking for €1,500.00; a replay that corrects the amount
    counts what is left of it."""
    card = only_card(await send(app, f"{ORDER} amount=€2,500"))
    await send(app, button=f"approve:{card.approval_id}")
    run_id = (await app.ledger.get_approval(card.approval_id)).run_id  # type: ignore[union-attr]
    part = {"invoice": "INV-7", "amount": "1000"}
    await app.engine.offer_event(run_id, "payment", part, "hook:payments")
    today = await daily(app)
    assert "€1,500.00 at stake" in today
    assert "€2,500.00 at stake" not in today
    await send(app, f"/replay {run_id} overdue amount=€3,000")
    assert "€2,000.00 at stake" in await daily(app)


async def test_a_payment_of_more_than_was_owed_ends_the_run_and_says_how_much_more(
    app: Steward,
) -> None:
    """/paid RUN 25000 of €2,500.00 owed (a zero too many) ended the run as paid and said
    "25000 paid": nothing told of the €22,500.00 more than was owed. It still ends as
    paid; the answer, the run's timeline and an audit event say how much more came."""
    card = only_card(await send(app, f"{ORDER} amount=€2,500"))
    await send(app, button=f"approve:{card.approval_id}")
    run_id = (await app.ledger.get_approval(card.approval_id)).run_id  # type: ignore[union-attr]
    await send(app, f"/paid {run_id} 1000")
    balance = (await app.engine.view(run_id)).approval
    assert balance is not None
    await send(app, button=f"approve:{balance.id}")
    over = await send(app, f"/paid {run_id} 25000")
    assert over.texts == [
        f"Recorded for run {run_id}: €25,000.00 paid, €23,500.00 more than was owed.",
        f"Run {run_id} (invoice_followup) is done.",
    ]
    run = await app.ledger.get_run(run_id)
    assert run is not None and run.status is RunStatus.SUCCEEDED
    woke = [row.decision for row in await timeline(app.ledger, run) if row.kind == "wait"]
    assert woke[-1] == "woke: €26,000.00 paid, €0.00 still owed, €23,500.00 more than was owed"
    (audited,) = [e for e in await app.ledger.audit_events() if e.kind == "run.overpaid"]
    assert (audited.subject, audited.data) == (
        run_id,
        {"step": "wait_for_payment", "paid": "€26,000.00", "over": "€23,500.00"},
    )


async def test_a_payment_that_came_another_way_is_recorded_as_a_webhooks_is(app: Steward) -> None:
    """A client who paid by cheque had no way into the run but /cancel: nothing told it
    what was paid, nor chased the rest. /paid counts it as a webhook's payment is: kept
    until the run waits for it, a part adding up, another currency refused, audited."""
    card = only_card(await send(app, f"{ORDER} amount=€2,500"))
    run_id = (await app.ledger.get_approval(card.approval_id)).run_id  # type: ignore[union-attr]
    kept = await send(app, f"/paid {run_id} 1000")
    assert kept.texts == [
        f"Recorded the payment for run {run_id}: it does not wait for one yet, and counts it "
        "when it gets there.",
        f"Approval {card.approval_id} still waits (Send a payment reminder for invoice INV-7 "
        f"(€2,500.00) to ap@acme.com): reject it if that should not happen now (/reject "
        f"{card.approval_id} paid).",
    ]
    await send(app, button=f"approve:{card.approval_id}")
    balance = (await app.engine.view(run_id)).approval
    assert balance is not None and balance.card["fields"]["Still owed"] == "€1,500.00"
    await send(app, button=f"approve:{balance.id}")

    refused = await send(app, f"/paid {run_id} $500")
    assert refused.texts == [
        f"Run {run_id} counts none of it: the payment pays in USD ($500), where EUR is owed: "
        "steward converts none. Nothing changed."
    ]
    part = await send(app, f"/paid {run_id} €500")
    assert part.texts[0] == f"Recorded for run {run_id}: €500.00 paid."
    assert dict(only_card(part).fields)["Still owed"] == "€1,000.00"
    await send(app, button=f"approve:{only_card(part).approval_id}")
    rest = await send(app, f"/paid {run_id}")
    assert rest.texts == [
        f"Recorded for run {run_id}: all of it paid.",
        f"Run {run_id} (invoice_followup) is done.",
    ]
    events = [e for e in await app.ledger.audit_events() if e.subject == run_id]
    by_operator = [(e.kind, e.actor) for e in events if e.kind.startswith("run.")]
    assert ("run.event_kept", "telegram:42") in by_operator
    assert ("run.payment_uncounted", "telegram:42") in by_operator
    assert by_operator.count(("run.event", "telegram:42")) == 3  # the kept one taken, two more
    assert len(outbox(app)) == 3
    for amount in ("5", "$5"):  # nothing to refuse, nor to audit, for a run that has ended
        ended = await send(app, f"/paid {run_id} {amount}")
        assert ended.texts == [f"run {run_id} has ended: it waits for nothing"]
    uncounted = [e for e in await app.ledger.audit_events() if e.kind == "run.payment_uncounted"]
    assert len(uncounted) == 1
    typo = run_id[:-1] + ("y" if run_id.endswith("x") else "x")  # a run's shape, no run's id
    mistyped = await send(app, f"/paid {typo} 5")
    assert mistyped.texts == [f"no run '{typo}'; /runs all lists them"]
    mistyped = await send(app, "/paid invoice42 5")
    assert mistyped.texts == ["no run 'invoice42'; /runs all lists them"]
    assert (await send(app, "/paid")).texts == [
        "Usage: /paid RUN [AMOUNT] (no amount: all it is owed)"
    ]
