"""Email over SMTP (aiosmtplib): exactly the approved text, once, or an honest "unknown".

``STEWARD_SMTP_URL`` says where: ``smtp://user:password@host:587`` upgrades with
STARTTLS when the server offers it, ``smtp+starttls://`` insists on it, ``smtps://``
speaks TLS from the first byte (port 465). Each message's Message-ID is derived from the
step's idempotency key, so the operator can look a message up, and a receiving server
that dedups by Message-ID sees one message however often it is offered.

SMTP cannot take a message back and has no idempotency of its own. Everything before
the DATA command changes nothing at the server, so a failure there is safe to retry;
a failure after it — the connection dropped before the server's answer — may or may
not have delivered the message, and is reported as exactly that, never retried.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Annotated, Any, ClassVar
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

import aiosmtplib
from pydantic import BaseModel, Field

from connectors.base import (
    ADDRESS,
    DataError,
    OutcomeUnknown,
    PermissionDenied,
    TransientError,
    validated,
)
from connectors.calendar import Invitation

DEFAULT_PORTS = {"smtp": 587, "smtp+starttls": 587, "smtps": 465}


class Attachment(BaseModel):
    filename: str = Field(min_length=1, max_length=200)
    content: str
    mime_type: str = "text/plain"


class SendEmail(BaseModel):
    """What a ``send_email`` action takes."""

    to: str = Field(pattern=ADDRESS)
    subject: str = Field(min_length=1, max_length=300, pattern=r"^[^\r\n]*$")
    body: str
    cc: list[Annotated[str, Field(pattern=ADDRESS)]] = Field(default_factory=list)
    attachments: list[Attachment] = Field(default_factory=list)


class SendInvitation(SendEmail):
    """What a ``send_invitation`` action takes: an email with a meeting attached."""

    title: str = Field(min_length=1, max_length=200)
    start: str  # YYYY-MM-DD HH:MM, in STEWARD_TIMEZONE
    minutes: int = Field(default=30, gt=0, le=24 * 60)


class CancelInvitation(SendInvitation):
    """What a ``cancel_invitation`` action takes: the invitation again, and ``of``, the
    idempotency key (``RUN:STEP``) of the step that sent it."""

    of: str = Field(pattern=r"^[A-Za-z0-9_]+:[a-z][a-z0-9_]*(:\d+)?(@\d+)?$")


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool  # TLS from the first byte
    starttls: bool | None  # True: insist; None: when offered

    @classmethod
    def parse(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError(
                f"{url.split('://')[0]!r} is not smtp://, smtp+starttls:// or smtps://"
            )
        try:  # its own message would quote what stands as the port: part of a password
            port, whole = parts.port, not (parts.path.strip("/") or parts.query or parts.fragment)
        except ValueError:
            port, whole = None, False
        if not whole:
            raise ValueError(
                "the URL is not smtp://user:password@host:port (a port up to 65535); a "
                "password holding / ? # or @ writes them percent-encoded (%2F %3F %23 %40)"
            )
        if not parts.hostname:
            raise ValueError("the URL has no host, e.g. smtp://user:password@mail.example.com")
        return cls(
            host=parts.hostname,
            port=port or DEFAULT_PORTS[parts.scheme],
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=parts.scheme == "smtps",
            starttls=True if parts.scheme == "smtp+starttls" else None,
        )


def message_id(key: str, sender: str) -> str:
    domain = sender.rsplit("@", 1)[-1].strip(">") or "steward.invalid"
    return f"<steward.{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


class EmailConnector:
    name = "email"
    actions = frozenset({"send_email", "send_invitation", "cancel_invitation"})
    idempotent = False  # SMTP servers do not dedup: an unknown outcome stops the run
    schemas: ClassVar[Mapping[str, type[BaseModel]]] = {
        "send_email": SendEmail,
        "send_invitation": SendInvitation,
        "cancel_invitation": CancelInvitation,
    }

    def __init__(
        self,
        server: SmtpServer,
        sender: str,
        timezone: str = "UTC",
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.server = server
        self.sender = sender
        self.timezone = ZoneInfo(timezone)
        self.tls_context = tls_context

    def where_to_look(self, key: str) -> str:
        """What an attempt under ``key`` was sent as, for an operator to search for."""
        return f"look in the sent mail for Message-ID {message_id(key, self.sender)}"

    def result_of(self, action: str, params: dict[str, Any], key: str) -> dict[str, Any]:
        """What ``perform`` answers for the email sent under ``key``; all of it is known
        without the server's word, for an attempt the operator confirms went out."""
        return self._result(self._email(action, params), key)

    def _email(self, action: str, params: dict[str, Any]) -> SendEmail:
        if action not in self.actions:
            raise DataError(
                f"email cannot {action!r}; it can " + ", ".join(sorted(self.actions)),
                reached=False,
            )
        email = validated(self.schemas[action], action, params)
        assert isinstance(email, SendEmail)
        return email

    def _result(self, email: SendEmail, key: str) -> dict[str, Any]:
        result: dict[str, Any] = {"message_id": message_id(key, self.sender), "to": email.to}
        if isinstance(email, SendInvitation):
            invitation = self.invitation(email, key)
            result |= {"uid": invitation.uid, "sequence": invitation.sequence}
        return result

    async def perform(self, action: str, params: dict[str, Any], key: str) -> dict[str, Any]:
        email = self._email(action, params)
        try:
            message = self.compose(email, key)
        except (ValueError, TypeError) as exc:  # a header email.message will not take
            raise DataError(f"{action}: cannot compose this email: {exc}", reached=False) from None
        if isinstance(email, SendInvitation):
            invitation = self.invitation(email, key)
            if not invitation.cancelled and invitation.start <= datetime.now(UTC):
                raise DataError(
                    f"send_invitation: the meeting at {email.start} has passed; "
                    "replay the run from its approval with a new time",
                    reached=False,
                )
            message.add_attachment(
                invitation.to_ics().encode(),
                maintype="text",
                subtype="calendar",
                filename="invite.ics",
                params={"method": invitation.method},
            )
        await self._send(message, [email.to, *email.cc])
        return self._result(email, key)

    def invitation(self, email: SendInvitation, key: str) -> Invitation:
        """One UID per run and step. Its SEQUENCE counts the step's visits and its gate's
        approvals (the key is RUN:STEP:VISIT@APPROVAL): sent on a new approval after an
        uncertain attempt, it updates the meeting that attempt may have made. A
        cancellation takes the UID of the invitation it cancels, one SEQUENCE on."""
        cancelled = isinstance(email, CancelInvitation)
        sent, _, approval = (email.of if isinstance(email, CancelInvitation) else key).partition(
            "@"
        )
        run_id, step_id, *visit = sent.split(":")
        counts = [int(count) for count in (*visit, approval) if count]
        try:
            start = datetime.fromisoformat(email.start.replace(" ", "T", 1))
        except ValueError:
            raise DataError(
                f"send_invitation start: {email.start!r} is not YYYY-MM-DD HH:MM", reached=False
            ) from None
        if start.tzinfo is None:
            start = start.replace(tzinfo=self.timezone)
        return Invitation(
            uid=f"{run_id}-{step_id}@steward",
            sequence=max(counts, default=1) - 1 + (1 if cancelled else 0),
            organizer=self.sender,
            attendee=email.to,
            title=email.title,
            start=start,
            duration=timedelta(minutes=email.minutes),
            description=email.body,
            cancelled=cancelled,
        )

    def compose(self, email: SendEmail, key: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = email.to
        if email.cc:
            message["Cc"] = ", ".join(email.cc)
        message["Subject"] = email.subject
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = message_id(key, self.sender)
        message.set_content(email.body, cte="quoted-printable")  # the approved text, exactly
        for attachment in email.attachments:
            maintype, _, subtype = attachment.mime_type.partition("/")
            message.add_attachment(
                attachment.content.encode(),
                maintype=maintype,
                subtype=subtype or "plain",
                filename=attachment.filename,
            )
        return message

    async def _send(self, message: EmailMessage, recipients: list[str]) -> None:
        server = self.server
        client = aiosmtplib.SMTP(
            hostname=server.host,
            port=server.port,
            use_tls=server.tls,
            start_tls=None,  # when offered: one it insists on is checked in _envelope
            tls_context=self.tls_context,
            timeout=20,
        )
        try:
            await self._envelope(client, recipients)
            try:
                await client.data(message.as_bytes())
            except aiosmtplib.SMTPResponseException as exc:
                if 400 <= exc.code < 600:  # refused in so many words: nothing was taken
                    raise _refusal(
                        "the SMTP server refused the message", exc.code, exc.message
                    ) from None
                raise OutcomeUnknown(
                    f"the SMTP server answered the message with nonsense ({exc.code} "
                    f"{exc.message}); it may have been sent: look for Message-ID "
                    f"{message['Message-ID']}"
                ) from None
            except (aiosmtplib.SMTPException, OSError) as exc:
                raise OutcomeUnknown(
                    f"the connection broke while the server had the message ({exc}); it may "
                    f"have been sent: look for Message-ID {message['Message-ID']}"
                ) from None
        finally:
            await _close(client)

    async def _envelope(self, client: aiosmtplib.SMTP, recipients: list[str]) -> None:
        """Everything before DATA: a failure here has sent nothing."""
        server = self.server
        try:
            await client.connect()
            if server.starttls and client.get_transport_info("ssl_object") is None:
                raise PermissionDenied(
                    "the SMTP server offers no STARTTLS, which smtp+starttls:// insists on; "
                    "use smtps:// if it speaks TLS on another port (465)"
                )
            if server.username and server.password:
                if client.get_transport_info("ssl_object") is None:
                    raise PermissionDenied(
                        "the SMTP server offers no STARTTLS, and steward will not send the "
                        "password unencrypted; use smtps:// or a server with STARTTLS"
                    )
                await client.login(server.username, server.password)
            try:
                await client.mail(self.sender)
            except aiosmtplib.SMTPSenderRefused as exc:
                raise _sender_refused(self.sender, exc.code, exc.message) from None
            for recipient in recipients:
                try:
                    await client.rcpt(recipient)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    raise _refusal(
                        f"the server refused {recipient}", exc.code, exc.message
                    ) from None
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise PermissionDenied(
                f"the SMTP server refused the login ({exc.code}); check STEWARD_SMTP_URL"
            ) from None
        except aiosmtplib.SMTPNotSupported as exc:  # no AUTH, or no STARTTLS when insisted on
            raise PermissionDenied(f"the SMTP server cannot do what is asked: {exc}") from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _refusal("the SMTP server refused the message", exc.code, exc.message) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            for cause in (exc, exc.__cause__):  # smtps:// wraps it, STARTTLS does not
                if isinstance(cause, ssl.SSLCertVerificationError):
                    raise PermissionDenied(
                        f"the SMTP server's certificate does not verify ({cause.verify_message}); "
                        "name the server in STEWARD_SMTP_URL as its certificate does, or "
                        "trust its CA with SSL_CERT_FILE"
                    ) from None
            raise TransientError(f"cannot reach the SMTP server: {exc}") from None


async def _close(client: aiosmtplib.SMTP) -> None:
    if not client.is_connected:
        return
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError):
        client.close()


def _sender_refused(sender: str, code: int, text: str) -> TransientError | PermissionDenied:
    """A 5xx at MAIL FROM is the operator's to fix, in the settings: no email of this
    run, nor of any other, goes from that address (530: not without a login)."""
    detail = f"{code} {text}".strip()
    if code < 500:
        return TransientError(f"the SMTP server put off the sender address: {detail}")
    if code == 530:
        return PermissionDenied(
            f"the SMTP server wants a login before it takes any email ({detail}); put the "
            "user and password in STEWARD_SMTP_URL"
        )
    return PermissionDenied(
        f"the SMTP server refused the sender address {parseaddr(sender)[1] or sender} "
        f"({detail}); set STEWARD_EMAIL_FROM to an address this server lets steward send from"
    )


def _refusal(what: str, code: int, text: str) -> TransientError | DataError:
    detail = f"{what}: {code} {text}".strip()
    return TransientError(detail) if 400 <= code < 500 else DataError(detail)
