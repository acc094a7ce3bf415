"""Deployment defaults fail closed: DEBUG is off unless set, and production refuses to start without real
secrets; `manage.py check --deploy` passes with the production settings the README documents."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from config.settings import BASE_DIR

SECRET = "Zq8vT1m-" + "production-secret-key-for-the-deploy-check-0123456789"
FIELD_KEY = "bm90LWEtcmVhbC1rZXktYnV0LTMyLWJ5dGVzLWxvbmc="  # urlsafe base64 of 32 bytes

# The production settings of the README's configuration section.
README_PRODUCTION = {
    "SECRET_KEY": SECRET,
    "FIELD_ENCRYPTION_KEY": FIELD_KEY,
    "ALLOWED_HOSTS": "shop-agent.example",
    "CSRF_TRUSTED_ORIGINS": "https://shop-agent.example",
    "PUBLIC_URL": "https://shop-agent.example",
    "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
    "EMAIL_URL": "smtp://mailer:secret@smtp.shop-agent.example:587?tls=1",
    "DEFAULT_FROM_EMAIL": "Shop agent <noreply@shop-agent.example>",
}

_OURS = {
    "DEBUG",
    "DJANGO_SETTINGS_MODULE",
    *README_PRODUCTION,
    "SECURE_COOKIES",
    "SECURE_SSL_REDIRECT",
    "EMAIL_BACKEND",
    "EMAIL_HOST",
    "METRICS_TOKEN",
}


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """A fresh process on ``config.settings`` (not the tools' development settings) with exactly ``env``."""
    clean = {k: v for k, v in os.environ.items() if k not in _OURS}
    return subprocess.run(
        [sys.executable, *args],
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )


def load(expression: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run(["-c", f"import config.settings as s; print({expression})"], **env)


def test_debug_is_off_unless_set() -> None:
    result = load("s.DEBUG", **README_PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_production_refuses_to_start_without_a_secret_key() -> None:
    env = {k: v for k, v in README_PRODUCTION.items() if k != "SECRET_KEY"}
    result = load("s.DEBUG", **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY must be set" in result.stderr


@pytest.mark.parametrize(
    "weak",
    [
        "django-insecure-bizagent-development-key-do-not-use-in-production",
        "k" * 60,  # long, but one character: Django's deploy check calls it weak too
        "short-but-random-Q1",
    ],
)
def test_production_refuses_a_weak_secret_key(weak: str) -> None:
    result = load("s.DEBUG", **{**README_PRODUCTION, "SECRET_KEY": weak})
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY must be set" in result.stderr


def test_production_refuses_to_start_without_a_field_encryption_key() -> None:
    env = {k: v for k, v in README_PRODUCTION.items() if k != "FIELD_ENCRYPTION_KEY"}
    result = load("s.DEBUG", **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured: FIELD_ENCRYPTION_KEY must be set when DEBUG is off" in result.stderr


def test_a_bad_field_encryption_key_is_refused_without_repeating_it() -> None:
    result = load("s.DEBUG", **{**README_PRODUCTION, "FIELD_ENCRYPTION_KEY": "hunter2-not-a-fernet-key"})
    assert result.returncode != 0
    assert "ImproperlyConfigured: FIELD_ENCRYPTION_KEY is not valid" in result.stderr
    assert "hunter2" not in result.stderr


def test_the_field_key_is_never_derived_from_the_secret_key_in_production() -> None:
    result = load("s.FIELD_ENCRYPTION_KEY", **README_PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == FIELD_KEY


def test_development_derives_a_field_key_only_with_debug_on() -> None:
    result = load("s.FIELD_ENCRYPTION_KEY, s.SECRET_KEY.startswith('django-insecure')", DEBUG="1")
    assert result.returncode == 0, result.stderr
    key, insecure = result.stdout.split()
    assert len(key) == 44 and insecure == "True"


def test_proxy_ssl_header_is_trusted_only_when_configured() -> None:
    without = {k: v for k, v in README_PRODUCTION.items() if k != "SECURE_PROXY_SSL_HEADER"}
    result = load("s.SECURE_PROXY_SSL_HEADER if hasattr(s, 'SECURE_PROXY_SSL_HEADER') else None", **without)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"
    result = load("s.SECURE_PROXY_SSL_HEADER", **README_PRODUCTION)
    assert result.stdout.strip() == "('HTTP_X_FORWARDED_PROTO', 'https')"
    result = load("s.DEBUG", **{**README_PRODUCTION, "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"})
    assert result.returncode != 0
    assert "SECURE_PROXY_SSL_HEADER='X-Forwarded-Proto' is not valid" in result.stderr


def test_production_cookies_and_https_redirect_are_on_by_default() -> None:
    result = load(
        "s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, s.SECURE_REDIRECT_EXEMPT",
        **README_PRODUCTION,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True True True ['^healthz$', '^readyz$', '^metrics$']"


def test_check_deploy_passes_with_the_readme_production_settings() -> None:
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], **README_PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNINGS" not in result.stdout + result.stderr


def test_check_deploy_warns_without_hsts() -> None:
    env = {k: v for k, v in README_PRODUCTION.items() if not k.startswith("SECURE_HSTS")}
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], **env)
    assert result.returncode != 0
    assert "security.W004" in result.stderr
