"""Speech to text through the pool: ``transcribe`` sends a customer's voice note to an endpoint of kind
``audio`` (``/v1/audio/transcriptions``, OpenAI's multipart form as vLLM serves Whisper, and speaches or LocalAI
too), with the pool's routing and retry policy (oneshot.py, tries.py). Accounted as an ``audio`` call of the
business.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from inference.accounting import Call
from inference.endpoints import Endpoint
from inference.oneshot import pool_post


async def transcribe(*, business_id: int, audio: bytes, content_type: str, filename: str) -> str:
    """What the voice note says, whitespace folded ("" for silence). PoolUnavailable when no endpoint of kind
    ``audio`` is configured or none answered; RequestRejected when the server refused the file."""
    call = Call(kind="audio", business_id=business_id or None)

    def form(endpoint: Endpoint) -> dict[str, Any]:
        call.model = endpoint.model or settings.LLAMA_MODEL
        # No language: the server detects it, and the agent answers in the language it hears.
        return {
            "files": {"file": (filename, audio, content_type)},
            "data": {"model": call.model, "response_format": "json", "temperature": "0"},
        }

    def text(body: Any, _call: Call) -> str:
        return " ".join(str(body["text"]).split())

    return await pool_post(
        call=call, path="/v1/audio/transcriptions", what="a transcription", request=form, answer=text
    )
