"""Encryption at rest for tokens and secrets (Fernet: AES-128-CBC + HMAC-SHA256, authenticated): channel
access tokens and app secrets (messaging), inference endpoint API keys (agents).

The key is ``settings.FIELD_ENCRYPTION_KEY`` (urlsafe base64 of 32 bytes; several comma-separated keys
rotate: the first encrypts, all decrypt). Settings require it when DEBUG is off and validate it; only in
development do they derive a stand-in from ``SECRET_KEY`` (docs/security.md, "Deployment defaults").
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

PREFIX = "fernet:"


@lru_cache(maxsize=4)
def _fernet(key_setting: str) -> MultiFernet:
    keys = [k.strip() for k in key_setting.split(",") if k.strip()]
    if not keys:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEY is empty")
    try:
        return MultiFernet([Fernet(k.encode()) for k in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEY must be urlsafe base64 of 32 bytes (Fernet.generate_key())"
        ) from exc


def fernet() -> MultiFernet:
    return _fernet(settings.FIELD_ENCRYPTION_KEY)


def encrypt(value: str) -> str:
    if not value:
        return ""
    return PREFIX + fernet().encrypt(value.encode()).decode()


def decrypt(stored: str) -> str:
    if not stored:
        return ""
    if not stored.startswith(PREFIX):
        raise ValueError("stored secret is not encrypted")
    try:
        return fernet().decrypt(stored[len(PREFIX) :].encode()).decode()
    except InvalidToken as exc:
        # Never include the value: it is a secret (or garbage), and messages end up in logs.
        raise ValueError("stored secret cannot be decrypted with FIELD_ENCRYPTION_KEY") from exc


class EncryptedTextField(models.TextField[str, str]):
    """A text column holding ``fernet:<token>``; Python code sees the plain value.

    Not queryable by value (each encryption is randomised), which is why routing uses plain id columns.
    """

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> str:
        return decrypt(value) if value else ""

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        return encrypt(value) if value else ""
