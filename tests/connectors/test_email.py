"""Email through a real local SMTP server (aiosmtpd), driven by real onboarding runs.

The approved text goes out byte for byte, once, under a Message-ID derived from the
step's idempotency key. A refusal is classified (4xx transient and retried, 5xx data),
an unreachable server is retried and then reported, and a connection that breaks while
the server holds the message stops the run as uncertain instead of sending again.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from bot.app import Steward
from bot.settings import load_settings
from connectors import DataError
from connectors.calendar import Invitation
from connectors.email import EmailConnector, SendInvitation, SmtpServer, message_id
from graph.digest import daily_list
from graph.effects import RetryPolicy
from graph.errors import InvalidState
from graph.templating import as_text
from memory.ledger import RunStatus, utcnow
from tests.net import free_port

SENDER = "steward@example.com"
ONBOARD = {"client": "Acme", "email": "jane@acme.com", "package": "basic"}
KICKOFF = datetime.now(UTC).replace(hour=15, minute=0, second=0, microsecond=0) + timedelta(30)
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02, timeout=10)


class Inbox:
    """An SMTP server's handler that keeps what it accepts, and misbehaves as told."""

    def __init__(self) -> None:
        self.received: list[EmailMessage] = []
        self.data_attempts = 0
        self.refuse_data_every_other = False
        self.refuse_recipient: str | None = None
        self.refuse_sender: str | None = None  # the answer to MAIL FROM, if not 250
        self.drop_after_data = False

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.refuse_sender is not None:
            return self.refuse_sender
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address == self.refuse_recipient:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_attempts += 1
        if self.refuse_data_every_other and self.data_attempts % 2 == 1:
            return "451 4.3.0 try again later"
        assert isinstance(envelope.content, bytes)
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append(parsed)
        if self.drop_after_data:  # took it, then the line went dead before "250"
            assert server.transport is not None
            server.transport.abort()
            await asyncio.sleep(0.1)
        return "250 2.0.0 queued"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


async def open_steward(home: Path, port: int) -> AsyncIterator[Steward]:
    settings = load_settings(
        home=home, smtp_url=f"smtp://127.0.0.1:{port}", email_from=f"Steward <{SENDER}>"
    )
    async with Steward.open(settings, retry=FAST_RETRY) as steward:
        yield steward


@pytest.fixture
async def app(tmp_path: Path, smtp: tuple[Inbox, int]) -> AsyncIterator[Steward]:
    async for steward in open_steward(tmp_path / "home", smtp[1]):
        yield steward


async def send_welcome(app: Steward, run_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """The welcome step's effect, performed through the guard as the step would."""
    return await app.engine.effects.perform(
        key=f"{run_id}:send_welcome",
        run_id=run_id,
        step_id="send_welcome",
        connector_name="email",
        action="send_email",
        params=params,
    )


async def approve_onboarding(app: Steward, edited: str | None = None) -> Any:
    view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
    assert view.approval is not None
    decision = await app.engine.decide(view.approval.id, True, "cli:shell", edited_text=edited)
    assert decision.view is not None
    return decision.view.run


async def test_the_approved_text_goes_out_once_under_a_message_id_from_the_key(
    app: Steward, smtp: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp
    approved = "Hi Jane,\n\nwelcome — *exactly* this text, <b>as typed</b> & approved.\n"
    run = await approve_onboarding(app, edited=approved)
    assert run.status is RunStatus.SUCCEEDED
    (sent,) = inbox.received
    assert sent.get_content().replace("\r\n", "\n") == approved  # CRLF: how SMTP carries lines
    assert sent["To"] == "jane@acme.com" and sent["Subject"] == "Welcome aboard, Acme"
    assert sent["Message-ID"] == message_id(f"{run.id}:send_welcome", SENDER)
    assert sent["From"] == f"Steward <{SENDER}>"

    # the step repeated: the stored result
    again = await send_welcome(app, run.id, {"to": "jane@acme.com", "subject": "x", "body": "y"})
    assert again["message_id"] == sent["Message-ID"]
    assert len(inbox.received) == 1


async def test_a_server_that_fails_every_other_attempt_still_gets_each_email_once(
    app: Steward, smtp: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp
    inbox.refuse_data_every_other = True
    runs = [await approve_onboarding(app) for _ in range(3)]
    assert all(run.status is RunStatus.SUCCEEDED for run in runs)
    assert inbox.data_attempts == 6
    ids = sorted(str(m["Message-ID"]) for m in inbox.received)
    assert ids == sorted(message_id(f"{r.id}:send_welcome", SENDER) for r in runs)


async def test_a_refused_recipient_is_the_operators_to_fix_and_nothing_is_sent(
    app: Steward, smtp: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp
    inbox.refuse_recipient = "jane@acme.com"
    run = await approve_onboarding(app)
    assert run.status is RunStatus.FAILED and run.error_class == "data"
    assert "jane@acme.com" in (run.error or "") and "550" in (run.error or "")
    assert inbox.received == [] and inbox.data_attempts == 0
    kinds = [e.kind for e in await app.ledger.audit_events()]
    assert "effect.failed.data" in kinds


@pytest.mark.parametrize(
    ("answer", "told"),
    [
        (
            "553 5.7.1 Sender address rejected: not owned by user",
            f"the SMTP server refused the sender address {SENDER} (553 5.7.1 Sender address "
            "rejected: not owned by user); set STEWARD_EMAIL_FROM to an address this server "
            "lets steward send from",
        ),
        ("530 5.7.0 Authentication required", "put the user and password in STEWARD_SMTP_URL"),
    ],
)
async def test_a_refused_sender_address_names_the_setting_to_fix(
    app: Steward, smtp: tuple[Inbox, int], answer: str, told: str
) -> None:
    """A 5xx at MAIL FROM said "the SMTP server refused the message" and asked the
    operator about the email (a data error), where no email could go from that address."""
    inbox, _ = smtp
    inbox.refuse_sender = answer
    run = await approve_onboarding(app)
    assert run.status is RunStatus.FAILED and run.error_class == "permission"
    assert told in (run.error or "")
    notice = app.coordinator.describe(await app.engine.view(run.id)).texts[0]
    assert told in notice and f"/retry {run.id} when it is fixed" in notice
    assert inbox.received == [] and inbox.data_attempts == 0
    assert app.engine.effects.breaker("email").failures == 0  # it answered

    inbox.refuse_sender = None  # the setting fixed
    assert (await app.engine.retry(run.id, "cli:shell")).run.status is RunStatus.SUCCEEDED
    assert len(inbox.received) == 1


async def test_a_refused_send_keeps_its_approval_in_the_timeline_once_through_a_retry(
    app: Steward, smtp: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp
    inbox.refuse_recipient = "jane@acme.com"
    run = await approve_onboarding(app)
    assert run.status is RunStatus.FAILED

    def approvals(steps: list[Any]) -> list[str]:
        return [f"{s.step_id} {s.status}" for s in steps if s.step_id == "approve_welcome"]

    assert approvals(await app.ledger.run_steps(run.id)) == ["approve_welcome approved"]
    inbox.refuse_recipient = None
    retried = await app.engine.retry(run.id, "cli:shell")
    assert retried.run.status is RunStatus.SUCCEEDED and len(inbox.received) == 1
    assert approvals(await app.ledger.run_steps(run.id)) == ["approve_welcome approved"]


async def test_an_unreachable_server_is_retried_reported_and_retried_by_the_operator(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens here yet
    async for app in open_steward(tmp_path / "home", port):
        run = await approve_onboarding(app)
        assert run.status is RunStatus.FAILED and run.error_class == "transient"
        assert "cannot reach the SMTP server" in (run.error or "")

        inbox = Inbox()
        controller = Controller(inbox, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            view = await app.engine.retry(run.id, "cli:shell")
        finally:
            controller.stop()
        assert view.run.status is RunStatus.SUCCEEDED
        assert len(inbox.received) == 1


async def test_a_server_without_the_starttls_the_url_insists_on_is_the_operators_to_fix(
    tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    """It was "cannot reach the SMTP server", retried like an outage, and counted
    toward opening the circuit; the server answered, and only the settings can help."""
    inbox, port = smtp
    settings = load_settings(
        home=tmp_path / "home",
        smtp_url=f"smtp+starttls://127.0.0.1:{port}",
        email_from=SENDER,
    )
    async with Steward.open(settings, retry=FAST_RETRY) as app:
        run = await approve_onboarding(app)
        assert run.status is RunStatus.FAILED and run.error_class == "permission"
        assert "offers no STARTTLS, which smtp+starttls:// insists on" in (run.error or "")
        assert app.engine.effects.breaker("email").failures == 0
    assert inbox.received == [] and inbox.data_attempts == 0


@pytest.mark.parametrize("scheme", ["smtps", "smtp+starttls"])
async def test_a_certificate_that_does_not_verify_is_the_operators_to_fix(
    tmp_path: Path, scheme: str
) -> None:
    """It was "cannot reach the SMTP server", retried like an outage and counted toward
    opening the circuit; no retry makes a certificate verify."""
    inbox, port = Inbox(), free_port()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(Path(__file__).with_name("self_signed.pem"))
    tls = {"ssl_context": server_tls} if scheme == "smtps" else {"tls_context": server_tls}
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **tls)
    controller.start()
    try:
        settings = load_settings(
            home=tmp_path / "home", smtp_url=f"{scheme}://127.0.0.1:{port}", email_from=SENDER
        )
        async with Steward.open(settings, retry=FAST_RETRY) as app:
            run = await approve_onboarding(app)
            assert run.status is RunStatus.FAILED and run.error_class == "permission"
            assert "certificate does not verify (self-signed certificate)" in (run.error or "")
            assert app.engine.effects.breaker("email").failures == 0
    finally:
        controller.stop()
    assert inbox.received == []


async def test_a_line_dead_after_the_server_took_the_message_stops_as_uncertain(
    app: Steward, smtp: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp
    inbox.drop_after_data = True
    run = await approve_onboarding(app)
    assert run.status is RunStatus.FAILED and run.error_class == "uncertain"
    expected = message_id(f"{run.id}:send_welcome", SENDER)
    assert expected in (run.error or "")
    assert len(inbox.received) == 1  # delivered, but steward cannot know: no second try
    assert inbox.data_attempts == 1


async def test_a_text_approved_again_after_an_uncertain_send_goes_out_as_a_new_email(
    app: Steward, smtp: tuple[Inbox, int]
) -> None:
    """Replayed from its gate and approved with a new text, the step acts on a new
    approval: it took the uncertain attempt's key, so it stopped as uncertain about
    the old text, and /retry then sent the new one under the old Message-ID."""
    inbox, _ = smtp
    inbox.drop_after_data = True
    run = await approve_onboarding(app, edited="Hi Jane, version ONE")
    assert run.status is RunStatus.FAILED and run.error_class == "uncertain"
    inbox.drop_after_data = False
    again = await app.engine.replay(run.id, "approve_welcome", {}, "cli:shell")
    assert again.approval is not None
    done = await app.engine.decide(again.approval.id, True, "cli:shell", edited_text="version TWO")
    assert done.view is not None and done.view.run.status is RunStatus.SUCCEEDED
    first, second = inbox.received
    assert second.get_content().strip() == "version TWO"
    assert second["Message-ID"] == message_id(f"{run.id}:send_welcome@2", SENDER)
    assert first["Message-ID"] != second["Message-ID"]


async def test_retry_and_confirm_settle_the_attempt_checked_not_one_a_replay_went_past(
    app: Steward, smtp: tuple[Inbox, int]
) -> None:
    """A /retry about the invitation said the first welcome email, never checked, had
    not gone out (a /confirm, that it had): each settled every unknown attempt of the run."""
    inbox, _ = smtp
    inbox.drop_after_data = True
    kickoff = {**ONBOARD, "kickoff": f"{KICKOFF:%Y-%m-%d %H:%M}"}
    view = await app.engine.start("onboarding", kickoff, "cli:shell")
    assert view.approval is not None
    await app.engine.decide(view.approval.id, True, "cli:shell", edited_text="version ONE")
    inbox.drop_after_data = False
    again = await app.engine.replay(view.run.id, "approve_welcome", {}, "cli:shell")
    assert again.approval is not None
    welcomed = await app.engine.decide(again.approval.id, True, "cli:shell")
    assert welcomed.view is not None and welcomed.view.approval is not None
    inbox.drop_after_data = True
    stopped = await app.engine.decide(welcomed.view.approval.id, True, "cli:shell")
    assert stopped.view is not None and stopped.view.run.error_class == "uncertain"
    inbox.drop_after_data = False

    run_id = view.run.id
    assert (await app.engine.retry(run_id, "cli:shell")).run.status is RunStatus.SUCCEEDED
    first = await app.ledger.get_effect(f"{run_id}:send_welcome")
    assert first is not None and first.status == "started"  # still unknown
    kickoff_sent = await app.ledger.get_effect(f"{run_id}:send_kickoff")
    assert kickoff_sent is not None and kickoff_sent.status == "done"
    released = [e.subject for e in await app.ledger.audit_events() if e.kind == "effect.released"]
    assert released == [f"{run_id}:send_kickoff"]


async def test_an_attempt_a_crash_cut_short_names_the_message_id_to_look_for(
    app: Steward, smtp: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp
    view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
    assert view.approval is not None
    key = f"{view.run.id}:send_welcome"  # begun, then the process died: no outcome
    welcome = {"to": "jane@acme.com", "subject": "Welcome aboard, Acme", "body": "Hi"}
    await app.ledger.begin_effect(key, view.run.id, "send_welcome", "email", welcome)
    decided = await app.engine.decide(view.approval.id, True, "cli:shell")
    assert decided.view is not None
    run = decided.view.run
    assert run.status is RunStatus.FAILED and run.error_class == "uncertain"
    assert f"look in the sent mail for Message-ID {message_id(key, SENDER)}" in (run.error or "")
    assert inbox.received == []  # not sent again on a guess
    # It was in the sent mail: the operator says so, and the run goes on without it.
    advice = app.coordinator.describe(decided.view).texts[0]
    assert f"/confirm {run.id} if it happened, /retry {run.id} if not" in advice
    [item] = (await daily_list(app.ledger, app.catalog, utcnow(), ZoneInfo("UTC"))).items
    assert [b.payload for b in item.buttons] == [f"confirm:{run.id}", f"retry:{run.id}"]
    confirmed = await app.engine.confirm(run.id, "cli:shell")
    assert confirmed.run.status is RunStatus.SUCCEEDED
    assert inbox.received == []
    effect = await app.ledger.get_effect(key)
    assert effect is not None and effect.status == "done"
    assert effect.result == {
        "message_id": message_id(key, SENDER),
        "to": "jane@acme.com",
        "confirmed_by": "cli:shell",
    }
    kinds = [e.kind for e in await app.ledger.audit_events()]
    assert "effect.confirmed" in kinds
    with pytest.raises(InvalidState, match="did not stop as uncertain"):
        await app.engine.confirm(run.id, "cli:shell")


GREETING = """
name: greeting
title: Greeting
description: greets a client, then files where the greeting went
inputs:
  email: {type: email}
steps:
  - id: approve
    kind: approval
    summary: Greet {email}
  - id: send
    kind: action
    gate: approve
    connector: email
    action: send_email
    with: {to: "{email}", subject: Hello, body: Hi there}
    output: sent
  - id: approve_filing
    kind: approval
    summary: "File the greeting: {sent}"
  - id: file
    kind: action
    gate: approve_filing
    connector: outbox
    action: notify
    with: {text: "{sent}"}
"""


async def greeted(app: Steward) -> tuple[str, dict[str, Any]]:
    """A greeting approved, confirmed if its send stopped as uncertain: its run's id,
    and the card of the gate after the send."""
    view = await app.engine.start("greeting", {"email": "jane@acme.com"}, "cli:shell")
    assert view.approval is not None
    decided = await app.engine.decide(view.approval.id, True, "cli:shell")
    assert decided.view is not None
    run = decided.view.run
    if run.error_class == "uncertain":
        run = (await app.engine.confirm(run.id, "cli:shell")).run
    [filing] = await app.ledger.pending_approvals([run.id])
    assert filing.step_id == "approve_filing"
    return run.id, filing.card


async def test_a_confirmed_send_gives_the_steps_after_it_what_a_real_one_does(
    tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    """/confirm made the step's output {"confirmed_by": ...}: the next card and the
    filing showed who confirmed, not the Message-ID a sent email gives them."""
    inbox, port = smtp
    home = tmp_path / "home"
    (home / "processes").mkdir(parents=True)
    (home / "processes" / "greeting.yaml").write_text(GREETING)
    async for app in open_steward(home, port):
        sent_id, sent_card = await greeted(app)
        inbox.drop_after_data = True
        confirmed_id, confirmed_card = await greeted(app)
        assert len(inbox.received) == 2  # each went out once: the second, unknown to steward

        sent = {"message_id": message_id(f"{sent_id}:send", SENDER), "to": "jane@acme.com"}
        assert sent_card["summary"] == f"File the greeting: {as_text(sent)}"
        confirmed = as_text(
            {
                "message_id": message_id(f"{confirmed_id}:send", SENDER),
                "to": "jane@acme.com",
                "confirmed_by": "cli:shell",
            }
        )
        assert confirmed_card["summary"] == f"File the greeting: {confirmed}"
        assert confirmed_card["actions"][0]["params"]["text"] == confirmed


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com", ("mail.example.com", 587, None, None, False, None)),
        (
            "smtp+starttls://u@mail.example.com:2525",
            ("mail.example.com", 2525, "u", None, False, True),
        ),
        ("smtps://u:p%40ss@mail.example.com", ("mail.example.com", 465, "u", "p@ss", True, None)),
    ],
)
def test_the_smtp_url_says_how_to_connect(url: str, expected: tuple[Any, ...]) -> None:
    server = SmtpServer.parse(url)
    assert (
        server.host,
        server.port,
        server.username,
        server.password,
        server.tls,
        server.starttls,
    ) == expected


async def test_a_planned_kickoff_sends_an_invitation_after_its_own_approval(
    app: Steward, smtp: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp
    view = await app.engine.start(
        "onboarding", {**ONBOARD, "kickoff": f"{KICKOFF:%Y-%m-%d %H:%M}"}, "cli:shell"
    )
    assert view.approval is not None
    decided = await app.engine.decide(view.approval.id, True, "cli:shell")
    assert decided.view is not None and decided.view.approval is not None
    assert f"kick-off call on {KICKOFF:%Y-%m-%d %H:%M}" in decided.view.approval.card["summary"]
    assert len(inbox.received) == 1  # the welcome email only: the invitation waits
    done = await app.engine.decide(decided.view.approval.id, True, "cli:shell")
    assert done.view is not None and done.view.run.status is RunStatus.SUCCEEDED
    welcome, invite = inbox.received
    assert welcome["Subject"] == "Welcome aboard, Acme"
    assert invite["Subject"] == "Kick-off call: Acme"
    (attachment,) = list(invite.iter_attachments())
    assert attachment.get_content_type() == "text/calendar"
    assert attachment.get_param("method") == "REQUEST"
    ics = attachment.get_content()
    ics = ics if isinstance(ics, str) else ics.decode()
    assert f"UID:{view.run.id}-send_kickoff@steward" in ics
    assert "SEQUENCE:0" in ics
    assert f"DTSTART:{KICKOFF:%Y%m%dT%H%M%SZ}" in ics  # STEWARD_TIMEZONE is UTC here
    assert f"DTEND:{KICKOFF + timedelta(minutes=45):%Y%m%dT%H%M%SZ}" in ics
    assert "ATTENDEE;ROLE=REQ-PARTICIPANT;RSVP=TRUE:mailto:jane@acme.com" in ics


async def test_undoing_the_kickoff_cancels_that_invitation_in_the_calendar(
    app: Steward, smtp: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp
    view = await app.engine.start(
        "onboarding", {**ONBOARD, "kickoff": f"{KICKOFF:%Y-%m-%d %H:%M}"}, "cli:shell"
    )
    assert view.approval is not None
    decided = await app.engine.decide(view.approval.id, True, "cli:shell")
    assert decided.view is not None and decided.view.approval is not None
    await app.engine.decide(decided.view.approval.id, True, "cli:shell")
    assert len(inbox.received) == 2

    undo = await app.engine.compensate(view.run.id, "send_kickoff", "cli:shell")
    assert undo.approval is not None
    assert undo.approval.card["summary"] == (
        f"Cancel the kick-off call with jane@acme.com on {KICKOFF:%Y-%m-%d %H:%M}"
    )
    assert len(inbox.received) == 2  # nothing before its approval
    done = await app.engine.decide(undo.approval.id, True, "cli:shell")
    assert done.view is not None and done.view.run.status is RunStatus.SUCCEEDED
    cancel = inbox.received[2]
    assert cancel["Subject"] == "Cancelled: kick-off call, Acme"
    body = cancel.get_body().get_content()
    assert f"our kick-off call on {KICKOFF:%Y-%m-%d %H:%M} is cancelled" in body
    (attachment,) = list(cancel.iter_attachments())
    assert attachment.get_param("method") == "CANCEL"
    ics = attachment.get_content()
    ics = ics if isinstance(ics, str) else ics.decode()
    assert f"UID:{view.run.id}-send_kickoff@steward" in ics  # the same meeting
    assert "SEQUENCE:1" in ics and "METHOD:CANCEL" in ics and "STATUS:CANCELLED" in ics


async def test_an_invitation_approved_again_after_an_uncertain_send_updates_that_meeting(
    app: Steward, smtp: tuple[Inbox, int]
) -> None:
    """It went out under a UID of its own ("RUN-send_kickoff@2@steward"): a second
    meeting in the calendar beside the one the uncertain attempt delivered, which its
    undo could not cancel either (its key was no invitation's for cancel_invitation)."""
    inbox, _ = smtp
    kickoff = {**ONBOARD, "kickoff": f"{KICKOFF:%Y-%m-%d %H:%M}"}
    view = await app.engine.start("onboarding", kickoff, "cli:shell")
    assert view.approval is not None
    decided = await app.engine.decide(view.approval.id, True, "cli:shell")
    assert decided.view is not None and decided.view.approval is not None
    inbox.drop_after_data = True
    stopped = await app.engine.decide(decided.view.approval.id, True, "cli:shell")
    assert stopped.view is not None and stopped.view.run.error_class == "uncertain"
    inbox.drop_after_data = False
    again = await app.engine.replay(view.run.id, "approve_kickoff", {}, "cli:shell")
    assert again.approval is not None
    await app.engine.decide(again.approval.id, True, "cli:shell")
    undo = await app.engine.compensate(view.run.id, "send_kickoff", "cli:shell")
    assert undo.approval is not None
    done = await app.engine.decide(undo.approval.id, True, "cli:shell")
    assert done.view is not None and done.view.run.status is RunStatus.SUCCEEDED

    _, first, second, cancel = inbox.received
    calendars = []
    for sent in (first, second, cancel):
        (attachment,) = list(sent.iter_attachments())
        ics = attachment.get_content()
        calendars.append(ics if isinstance(ics, str) else ics.decode())
    uid = f"UID:{view.run.id}-send_kickoff@steward\r\n"
    assert all(uid in ics for ics in calendars)  # one meeting, sent, updated, cancelled
    assert [ics.split("SEQUENCE:")[1].split("\r\n")[0] for ics in calendars] == ["0", "1", "2"]


async def test_an_invitation_to_a_meeting_that_has_passed_is_refused_and_not_sent(
    smtp: tuple[Inbox, int],
) -> None:
    """Approved too late: the kick-off went by while its card waited."""
    inbox, port = smtp
    connector = EmailConnector(SmtpServer.parse(f"smtp://127.0.0.1:{port}"), SENDER)
    gone = datetime.now(UTC) - timedelta(minutes=5)
    invitation = {"to": "jane@acme.com", "subject": "s", "body": "b", "title": "Kick-off"}
    with pytest.raises(DataError, match="has passed; replay the run"):
        await connector.perform(
            "send_invitation", {**invitation, "start": f"{gone:%Y-%m-%d %H:%M}"}, "r1:send_kickoff"
        )
    assert inbox.received == []
    cancelled = {**invitation, "start": f"{gone:%Y-%m-%d %H:%M}", "of": "r1:send_kickoff"}
    await connector.perform("cancel_invitation", cancelled, "r1:undo")  # a cancellation goes
    assert len(inbox.received) == 1


def test_an_invitation_is_escaped_folded_and_keeps_its_uid_across_sends() -> None:
    connector = EmailConnector(SmtpServer.parse("smtp://x.example"), SENDER, "Europe/Berlin")
    email = SendInvitation(
        to="jane@acme.com",
        subject="s",
        body="Agenda; goals, risks\nand a very long line " + "x" * 120,
        title="Kick-off",
        start="2026-07-01 10:00",
    )
    first = connector.invitation(email, "r1:send_kickoff")
    again = connector.invitation(email, "r1:send_kickoff:2")
    assert first.uid == again.uid and (first.sequence, again.sequence) == (0, 1)
    assert first.start.astimezone(UTC).hour == 8  # Berlin summer time is UTC+2
    ics = first.to_ics(now=datetime(2026, 6, 1, tzinfo=UTC))
    assert all(len(line.encode()) <= 75 for line in ics.split("\r\n"))
    unfolded = ics.replace("\r\n ", "")
    assert "DESCRIPTION:Agenda\\; goals\\, risks\\nand a very long line " + "x" * 120 in unfolded
    assert isinstance(first, Invitation) and first.duration == timedelta(minutes=30)


@pytest.mark.parametrize(
    ("start", "utc_start", "utc_end"),
    [  # London's clocks go back at 02:00 BST on 31 October 2027, forward on 28 March
        ("2027-10-31 01:30", "20271031T003000Z", "20271031T020000Z"),  # it was 2.5 hours
        ("2027-03-28 00:30", "20270328T003000Z", "20270328T020000Z"),  # it was 30 minutes
    ],
)
def test_a_meeting_across_a_change_of_the_clocks_lasts_its_minutes(
    start: str, utc_start: str, utc_end: str
) -> None:
    connector = EmailConnector(SmtpServer.parse("smtp://x.example"), SENDER, "Europe/London")
    email = SendInvitation(
        to="jane@acme.com", subject="s", body="b", title="Kick-off", start=start, minutes=90
    )
    ics = connector.invitation(email, "r1:send_kickoff").to_ics()
    assert f"DTSTART:{utc_start}\r\n" in ics and f"DTEND:{utc_end}\r\n" in ics


@pytest.mark.parametrize(
    ("params", "complaint"),
    [
        ({"subject": "Hello\nBcc: everyone@example.com"}, "subject"),
        ({"cc": ["not an address"]}, "cc.0"),
        ({"to": "jöns@example.com"}, "to"),
        ({"to": "not an address"}, "to: String should match pattern"),
        ({"to": "billing,jane@acme.com"}, "to"),  # the envelope held "billing" alone
        ({"cc": ["Jane <jane@acme.com>"]}, "cc.0"),
    ],
)
async def test_an_email_that_cannot_be_sent_as_is_is_refused_before_anything(
    app: Steward, smtp: tuple[Inbox, int], params: dict[str, Any], complaint: str
) -> None:
    view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
    with pytest.raises(DataError, match=f"send_email {complaint}"):
        await send_welcome(
            app, view.run.id, {"to": "jane@acme.com", "subject": "s", "body": "b", **params}
        )
    assert await app.ledger.get_effect(f"{view.run.id}:send_welcome") is None  # not begun
    assert smtp[0].received == []
