"""Account mails, sent on the ``outbound`` queue (``config.celery``). Thin: ``dashboard.mail`` does the work.

Transient failures (the relay unreachable, a timeout, a 4xx answer) are tried again with back-off, at most five
times; a 5xx answer (a refused recipient or sender) is final and logged. A task run twice sends its mail twice,
which is harmless.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Callable
from typing import Any

from celery import shared_task

from dashboard import mail

logger = logging.getLogger(__name__)
MAX_RETRIES = 5


def _transient(exc: OSError) -> bool:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    return True  # connection refused or reset, timeout, TLS failure, server disconnected


def _deliver(task: Any, send: Callable[..., None], **kwargs: Any) -> None:
    try:
        send(**kwargs)
    except OSError as exc:  # smtplib.SMTPException is an OSError
        if not _transient(exc) or task.request.retries >= MAX_RETRIES:
            logger.error("%s: mail not sent: %s", task.name, exc)
            return
        raise task.retry(countdown=min(30 * 2**task.request.retries, 600)) from exc


@shared_task(bind=True, name="dashboard.tasks.send_signup_mail", acks_late=True, max_retries=MAX_RETRIES)
def send_signup_mail(self: Any, *, email: str, business_name: str, timezone_name: str) -> None:
    _deliver(
        self, mail.send_signup_mail, email=email, business_name=business_name, timezone_name=timezone_name
    )


@shared_task(
    bind=True, name="dashboard.tasks.send_password_reset_mail", acks_late=True, max_retries=MAX_RETRIES
)
def send_password_reset_mail(self: Any, *, email: str) -> None:
    _deliver(self, mail.send_password_reset_mail, email=email)


@shared_task(bind=True, name="dashboard.tasks.send_invitation_mail", acks_late=True, max_retries=MAX_RETRIES)
def send_invitation_mail(self: Any, invitation_id: int) -> None:
    _deliver(self, mail.send_invitation_mail, invitation_id=invitation_id)
