"""The pool's endpoints: ``LLAMA_POOL`` (or the embedded llama.cpp server) plus rows from the admin.

``LLAMA_POOL`` is a comma-separated list of base URLs, each optionally followed by ``;key=value`` options::

    LLAMA_POOL=http://gpu1:8000;weight=2;model=meta-llama/Llama-3.1-8B-Instruct,http://gpu2:8000;key=sk-abc;max=16

Options: ``weight`` (relative share of traffic, default 1), ``key`` (bearer API key, default
``LLAMA_API_KEY``), ``model`` (served model name, default ``LLAMA_MODEL``), ``max`` (requests in flight
on this endpoint across all workers, default ``LLAMA_ENDPOINT_MAX_CONCURRENCY``), ``kind`` (``chat``,
``embeddings``, ``any``, default ``any``, or ``audio``: a speech-to-text server serving
``/v1/audio/transcriptions``, as vLLM serves Whisper, for customers' voice notes; it serves nothing else, and no
other kind is sent audio) and ``images`` (``yes``: the endpoint serves a vision model that
takes OpenAI-style ``image_url`` content parts, as vLLM serves Llama 4 or Llama 3.2 Vision; chat requests that
carry a photo go only to such endpoints; default ``no``). A base URL may be written with or without ``/v1`` (vLLM, Ollama
and the OpenAI SDK write ``http://host:8000/v1``) and a trailing slash; an endpoint's id is the URL without
either, and the pool adds ``/v1/...`` to it. The same holds for endpoints added in the admin.

An endpoint's ``max`` is what its server really serves at once: the embedded llama.cpp server (llama-cpp-
python's) serves one request at a time, so it is registered with one slot whatever
``LLAMA_ENDPOINT_MAX_CONCURRENCY`` says; further requests wait for that slot in the pool (tries.py), not
inside the server.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError

from common import aio

logger = logging.getLogger(__name__)

KINDS = ("any", "chat", "embeddings", "audio")
OPTIONS = ("weight", "key", "model", "max", "kind", "images")
_YES_NO = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}
# How long a process trusts its copy of the endpoint list before reading the admin rows again.
REFRESH_SECONDS = 10.0
_V1_SUFFIX = re.compile(r"(/v1)?/*$")


def base_url(url: str) -> str:
    """``url`` without a trailing ``/v1`` and trailing slashes: ``http://gpu1:8000/v1/`` -> ``http://gpu1:8000``."""
    return _V1_SUFFIX.sub("", url.strip().rstrip("/"), count=1)


@dataclass(frozen=True)
class Endpoint:
    url: str
    weight: int = 1
    api_key: str = ""
    model: str = ""
    max_concurrency: int = 0
    kind: str = "any"
    source: str = "settings"
    accepts_images: bool = False

    @property
    def name(self) -> str:
        return self.url

    def serves(self, kind: str, *, images: bool = False) -> bool:
        """Whether it serves ``kind`` requests (``chat``, ``embeddings`` or ``audio``; ``images``: chat requests
        that carry a photo). An ``any`` endpoint serves chat and embeddings: a speech-to-text server is its own."""
        if kind == "audio" or self.kind == "audio":
            return self.kind == kind
        return self.kind in ("any", kind) and (self.accepts_images or not images)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def parse_pool(
    value: str, *, default_key: str = "", default_model: str = "", default_max: int = 64
) -> list[Endpoint]:
    """Parse ``LLAMA_POOL``; raises ImproperlyConfigured naming the bad entry."""
    endpoints: list[Endpoint] = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        url, *options = (piece.strip() for piece in entry.split(";"))
        if not url.startswith(("http://", "https://")):
            raise ImproperlyConfigured(
                f"LLAMA_POOL entry {entry!r}: the URL must start with http:// or https://"
            )
        fields: dict[str, str] = {}
        for option in options:
            key, sep, raw = option.partition("=")
            if not sep or key not in OPTIONS:
                raise ImproperlyConfigured(
                    f"LLAMA_POOL entry {entry!r}: unknown option {option!r} ({', '.join(OPTIONS)})"
                )
            fields[key] = raw.strip()
        try:
            weight = int(fields.get("weight", "1"))
            max_concurrency = int(fields.get("max", str(default_max)))
        except ValueError as exc:
            raise ImproperlyConfigured(f"LLAMA_POOL entry {entry!r}: weight and max are integers") from exc
        kind = fields.get("kind", "any")
        images = _YES_NO.get(fields.get("images", "no").lower())
        if images is None:
            raise ImproperlyConfigured(f"LLAMA_POOL entry {entry!r}: images is yes or no")
        if weight < 1 or max_concurrency < 1 or kind not in KINDS:
            raise ImproperlyConfigured(
                f"LLAMA_POOL entry {entry!r}: weight and max must be >= 1, kind one of {', '.join(KINDS)}"
            )
        endpoints.append(
            Endpoint(
                url=base_url(url),
                weight=weight,
                api_key=fields.get("key", default_key),
                model=fields.get("model", default_model),
                max_concurrency=max_concurrency,
                kind=kind,
                accepts_images=images,
            )
        )
    return endpoints


def _configured() -> list[Endpoint]:
    if settings.LLAMA_POOL:
        return parse_pool(
            settings.LLAMA_POOL,
            default_key=settings.LLAMA_API_KEY,
            default_model=settings.LLAMA_MODEL,
            default_max=settings.LLAMA_ENDPOINT_MAX_CONCURRENCY,
        )
    if not settings.LLAMA_EMBEDDED_URL:
        return []
    return [
        Endpoint(
            url=base_url(settings.LLAMA_EMBEDDED_URL),
            model=settings.LLAMA_EMBEDDED_MODEL,
            max_concurrency=settings.LLAMA_EMBEDDED_SLOTS,
            source="embedded",
        )
    ]


def _admin_rows() -> list[Endpoint]:
    from inference.models import InferenceEndpoint

    try:
        rows = list(InferenceEndpoint.objects.filter(enabled=True).order_by("pk"))
    except (DatabaseError, RuntimeError) as exc:
        # RuntimeError: pytest-django refuses database access in a test that did not ask for it.
        logger.debug("inference endpoints from the admin are not readable: %s", exc)
        return []
    return [
        Endpoint(
            url=base_url(row.base_url),
            weight=row.weight,
            api_key=row.api_key or settings.LLAMA_API_KEY,
            model=row.model or settings.LLAMA_MODEL,
            max_concurrency=row.max_concurrency or settings.LLAMA_ENDPOINT_MAX_CONCURRENCY,
            kind=row.kind,
            source="admin",
            accepts_images=row.accepts_images,
        )
        for row in rows
    ]


def _merge(configured: list[Endpoint], rows: list[Endpoint]) -> list[Endpoint]:
    seen = {endpoint.url for endpoint in configured}
    return configured + [row for row in rows if row.url not in seen]


_cache: tuple[tuple[object, ...], float, list[Endpoint]] | None = None


def _signature() -> tuple[object, ...]:
    return (
        settings.LLAMA_POOL,
        settings.LLAMA_API_KEY,
        settings.LLAMA_MODEL,
        settings.LLAMA_ENDPOINT_MAX_CONCURRENCY,
        settings.LLAMA_EMBEDDED_URL,
    )


def _cached(signature: tuple[object, ...]) -> list[Endpoint] | None:
    if _cache is not None and _cache[0] == signature and time.monotonic() - _cache[1] < REFRESH_SECONDS:
        return _cache[2]
    return None


def _store(signature: tuple[object, ...], endpoints: list[Endpoint]) -> list[Endpoint]:
    global _cache
    _cache = (signature, time.monotonic(), endpoints)
    return endpoints


def pool_endpoints() -> list[Endpoint]:
    """Every endpoint (sync callers: the command, probes, /readyz)."""
    signature = _signature()
    cached = _cached(signature)
    if cached is not None:
        return cached
    return _store(signature, _merge(_configured(), _admin_rows()))


async def apool_endpoints() -> list[Endpoint]:
    """Every endpoint (async callers); the admin rows are read off the event loop, at most every 10 s."""
    signature = _signature()
    cached = _cached(signature)
    if cached is not None:
        return cached
    rows = await aio.database(_admin_rows)
    return _store(signature, _merge(_configured(), rows))


async def apool_accepts_images() -> bool:
    """Whether some endpoint of the pool describes photos (chat with ``image_url`` content parts)."""
    return any(endpoint.serves("chat", images=True) for endpoint in await apool_endpoints())


async def apool_transcribes() -> bool:
    """Whether some endpoint of the pool transcribes voice notes (``kind=audio``)."""
    return any(endpoint.serves("audio") for endpoint in await apool_endpoints())


def reset_endpoint_cache() -> None:
    """Forget the cached list (tests; the admin after saving an endpoint)."""
    global _cache
    _cache = None
