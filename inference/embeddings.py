"""Embeddings through the pool: ``embed`` calls ``/v1/embeddings`` on endpoints whose kind allows it, with
the pool's routing and retry policy (oneshot.py, tries.py); ``embed_sync`` does the same from sync code, on the
pool's process's background loop (``common.aio``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from common import aio
from inference.accounting import Call
from inference.oneshot import pool_post
from inference.tries import Retry


async def embed(texts: list[str], *, model: str | None = None) -> list[list[float]]:
    """Vectors for ``texts`` from an endpoint serving embeddings, in input order."""
    if not texts:
        return []
    model = model or settings.EMBEDDINGS_MODEL

    def vectors(body: Any, call: Call) -> list[list[float]]:
        rows = sorted(body["data"], key=lambda row: row["index"])
        found = [[float(x) for x in row["embedding"]] for row in rows]
        if len(found) != len(texts):
            raise Retry(f"{len(found)} embeddings for {len(texts)} inputs")
        call.prompt_tokens = int((body.get("usage") or {}).get("prompt_tokens") or 0)
        return found

    return await pool_post(
        call=Call(kind="embeddings", business_id=None, model=model),
        path="/v1/embeddings",
        what="embeddings",
        request=lambda endpoint: {"json": {"model": model, "input": texts, "encoding_format": "float"}},
        answer=vectors,
    )


def embed_sync(texts: list[str], *, model: str | None = None) -> list[list[float]]:
    """``embed`` for sync callers (not from inside a running event loop's thread)."""
    return aio.run(embed(texts, model=model))
