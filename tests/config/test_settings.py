"""A wrong environment stops start-up with a message that names the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from config.settings import BASE_DIR


def load_settings(**env: str) -> subprocess.CompletedProcess[str]:
    """Import the settings in a fresh process; development mode unless ``env`` sets DEBUG."""
    unset = {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "FIELD_ENCRYPTION_KEY", "SECURE_PROXY_SSL_HEADER"}
    clean = {k: v for k, v in os.environ.items() if k not in unset}
    env = {"DEBUG": "1", **env}
    return subprocess.run(
        [sys.executable, "-c", "import config.settings as s; print('DEBUG', s.DEBUG)"],
        env={**clean, **env},
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


GOOD_KEY = "a-real-production-secret-key-with-many-characters-0123456789"
FIELD_KEY = "x" * 43 + "="


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DEBUG": "maybe"}, "DEBUG='maybe'"),
        ({"LLAMA_CONNECT_TIMEOUT": "soon"}, "LLAMA_CONNECT_TIMEOUT='soon'"),
        ({"LLAMA_FIRST_TOKEN_TIMEOUT": "-1"}, "LLAMA_FIRST_TOKEN_TIMEOUT='-1'"),
        ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL='mysql://db/x'"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL='localhost:6379'"),
        ({"EMBEDDINGS_BACKEND": "openai"}, "EMBEDDINGS_BACKEND='openai'"),
        ({"BIZAGENT_REDIS_DB": "99"}, "BIZAGENT_REDIS_DB='99'"),
        ({"DEBUG": "0", "ALLOWED_HOSTS": "a.example"}, "SECRET_KEY must be set"),
        ({"DEBUG": "0", "SECRET_KEY": "short", "ALLOWED_HOSTS": "a.example"}, "SECRET_KEY must be set"),
        (
            {"DEBUG": "0", "SECRET_KEY": "django-insecure-" + "x" * 40, "ALLOWED_HOSTS": "a.example"},
            "SECRET_KEY must be set",
        ),
        ({"DEBUG": "0", "SECRET_KEY": GOOD_KEY}, "ALLOWED_HOSTS must list"),
    ],
)
def test_bad_values_stop_start_up_naming_the_variable(env: dict[str, str], named: str) -> None:
    result = load_settings(**env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert named in result.stderr


def test_production_settings_load_with_a_real_key() -> None:
    result = load_settings(
        DEBUG="0", SECRET_KEY=GOOD_KEY, ALLOWED_HOSTS="shop.example", FIELD_ENCRYPTION_KEY=FIELD_KEY
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "DEBUG False"


def test_unix_socket_redis_url_becomes_a_celery_socket_url() -> None:
    from config.settings import _celery_url

    assert _celery_url("unix:///tmp/r.sock?db=3") == "redis+socket:///tmp/r.sock?virtual_host=3"
    assert _celery_url("redis://h:6379/2") == "redis://h:6379/2"
