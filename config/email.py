"""Outgoing mail from one variable, ``EMAIL_URL`` (password resets, sign-up confirmations, invitations).

``smtp://user:password@host:587?tls=1`` (STARTTLS; ``smtp+tls://`` says the same), ``smtps://user:password@host:465``
(TLS from the first byte), ``console://`` (mails printed on the worker's standard output). User and password
are percent-encoded like any URL's (``@`` is ``%40``). Query options: ``tls=1``, ``ssl=1``, ``timeout=<seconds>``
(default 10: a hung relay must not hold a worker).

Unset: the console backend, which delivers nothing. That is right for development; with DEBUG off the
``dashboard`` app logs a warning at start-up (``dashboard.apps``), because every account mail would be lost.
A wrong value stops start-up with a message that names ``EMAIL_URL`` and never repeats it (it holds a password).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
CONSOLE_BACKEND = "django.core.mail.backends.console.EmailBackend"
_EXPECTED = "expected smtp://user:password@host:587?tls=1, smtps://user:password@host:465 or console://"


@dataclass(frozen=True)
class EmailSettings:
    backend: str
    host: str = "localhost"
    port: int = 25
    user: str = ""
    password: str = ""
    use_tls: bool = False
    use_ssl: bool = False
    timeout: float = 10.0
    configured: bool = False  # EMAIL_URL was set: mail really leaves (or, console://, was asked to print)

    @property
    def smtp(self) -> bool:
        return self.backend == SMTP_BACKEND


def _flag(options: dict[str, str], name: str) -> bool:
    value = options.pop(name, "0").lower()
    if value not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
        raise ValueError(f"{name}= must be 1 or 0")
    return value in {"1", "true", "yes", "on"}


def _parse(raw: str) -> EmailSettings:
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme == "console":
        return EmailSettings(backend=CONSOLE_BACKEND, configured=True)
    if scheme not in {"smtp", "smtp+tls", "smtps"}:
        raise ValueError(f"unknown scheme {scheme!r}" if scheme else "no scheme")
    if not parts.hostname:
        raise ValueError("no host")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    use_tls = _flag(options, "tls") or scheme == "smtp+tls"
    use_ssl = _flag(options, "ssl") or scheme == "smtps"
    timeout = float(options.pop("timeout", "10"))
    if options:
        raise ValueError(f"unknown option {sorted(options)[0]!r}")
    if use_tls and use_ssl:
        raise ValueError("tls and ssl exclude each other (smtps:// is ssl)")
    if not timeout > 0:
        raise ValueError("timeout must be above 0")
    port = parts.port  # ValueError for a port that is not a number or out of range
    return EmailSettings(
        backend=SMTP_BACKEND,
        host=parts.hostname,
        port=port or (465 if use_ssl else 587 if use_tls else 25),
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        use_tls=use_tls,
        use_ssl=use_ssl,
        timeout=timeout,
        configured=True,
    )


def email_settings(raw: str) -> EmailSettings:
    """The mail settings ``EMAIL_URL`` describes; unset or empty: the console backend, not ``configured``."""
    raw = raw.strip()
    if not raw:
        return EmailSettings(backend=CONSOLE_BACKEND)
    try:
        return _parse(raw)
    except ValueError as exc:
        # The value holds a password: name the variable and the problem, never the value.
        raise ImproperlyConfigured(f"EMAIL_URL is not valid: {_EXPECTED} ({exc})") from None
