"""Readiness of the inference pool, as /readyz reports it."""

from __future__ import annotations

import httpx
from django.conf import settings

from config import embedded


def configured_base_urls() -> list[str]:
    if settings.LLAMA_POOL:
        return [part.split(";")[0].strip().rstrip("/") for part in settings.LLAMA_POOL.split(",") if part.strip()]
    url = embedded.embedded_llama_url()
    return [url] if url else []


def pool_readiness() -> tuple[bool, str]:
    urls = configured_base_urls()
    if not urls:
        return False, "no inference endpoint configured (LLAMA_POOL unset and the embedded server is not running)"
    healthy = []
    for url in urls:
        try:
            if httpx.get(f"{url}/v1/models", timeout=1.0).status_code == 200:
                healthy.append(url)
        except httpx.HTTPError:
            continue
    return bool(healthy), f"{len(healthy)}/{len(urls)} endpoint(s) healthy"
