"""Server-sent events from ``/v1/chat/completions`` with ``stream: true``, parsed by hand.

Handles what vLLM, llama.cpp, Ollama and proxies send (PROTOCOLS.md section 4.2): the role chunk, content
deltas, ``finish_reason``, a usage chunk with ``choices: []`` whether or not it was asked for, ``usage: null``
on ordinary chunks, ``: ping`` comments, CRLF endings, unknown keys, tool-call deltas split by index, an
error object sent in-band after HTTP 200, and ``data: [DONE]``. A stream that ends without ``[DONE]`` is
truncated; the caller decides what that means (``done`` stays False).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from inference.types import ToolCall

logger = logging.getLogger(__name__)


def error_message(body: Any) -> str:
    """The message of either error shape: ``{"error": {"message": ...}}`` (current vLLM, llama.cpp,
    OpenAI) or flat ``{"object": "error", "message": ...}`` (older vLLM); plus ``{"error": "text"}``."""
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict):
            return str(inner.get("message") or inner.get("type") or inner)
        if isinstance(inner, str) and inner:
            return inner
        if body.get("message"):
            return str(body["message"])
        if body.get("detail"):
            return str(body["detail"])
    return str(body)[:300]


@dataclass
class _ToolAccumulator:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class StreamParser:
    done: bool = False
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # True once the reply has begun (a non-empty content delta or a tool-call delta).
    started: bool = False
    # The message of an in-band error; parsing stops there (the texts before it are still returned).
    error: str | None = None
    ignored: int = 0
    _buffer: bytes = b""
    _data: list[str] = field(default_factory=list)
    _tools: dict[int, _ToolAccumulator] = field(default_factory=dict)

    def feed(self, chunk: bytes) -> list[str]:
        """Consume bytes; the content deltas they complete (check ``error`` and ``done`` after)."""
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        texts: list[str] = []
        for raw in lines:
            if self.error is not None or self.done:
                break
            line = raw.rstrip(b"\r")
            if not line:
                self._dispatch(texts)
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append((value[1:] if value.startswith(b" ") else value).decode("utf-8", "replace"))
            # Comments (": ping") and other fields (event:, id:, retry:) carry nothing for us.
        return texts

    def finish(self) -> list[str]:
        """The body ended: dispatch a last event that had no blank line after it."""
        texts: list[str] = []
        if self._buffer.strip():
            texts = self.feed(b"\n")
        self._dispatch(texts)
        return texts

    def _dispatch(self, texts: list[str]) -> None:
        if not self._data:
            return
        payload = "\n".join(self._data)
        self._data = []
        if payload.strip() == "[DONE]":
            self.done = True
            return
        try:
            chunk = json.loads(payload)
        except ValueError:
            # A proxy's noise must not end a good reply; what it would have said is lost either way.
            self.ignored += 1
            logger.warning("ignored a data line that is not JSON: %.80r", payload)
            return
        if not isinstance(chunk, dict):
            self.ignored += 1
            return
        if chunk.get("error") or chunk.get("object") == "error":
            self.error = error_message(chunk)
            return
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # we always ask for n=1
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                self.started = True
                texts.append(str(content))
            for call in delta.get("tool_calls") or ():
                self.started = True
                slot = self._tools.setdefault(int(call.get("index", 0)), _ToolAccumulator())
                if call.get("id"):
                    slot.id = str(call["id"])
                function = call.get("function") or {}
                if function.get("name"):
                    slot.name += str(function["name"])
                if function.get("arguments"):
                    slot.arguments.append(str(function["arguments"]))
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])

    def tool_calls(self) -> tuple[ToolCall, ...]:
        calls = []
        for index in sorted(self._tools):
            slot = self._tools[index]
            text = "".join(slot.arguments)
            try:
                parsed = json.loads(text) if text.strip() else {}
            except ValueError:
                parsed = None
            calls.append(
                ToolCall(
                    index=index,
                    id=slot.id,
                    name=slot.name,
                    arguments=parsed if isinstance(parsed, dict) else None,
                    arguments_text=text,
                )
            )
        return tuple(calls)
