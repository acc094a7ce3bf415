"""What the inference pool client takes and yields (the contract other apps code against).

``stream_chat`` yields, in order: any number of ``TextDelta`` (and at most one ``ToolCalls``, after the
stream's tool-call deltas are assembled), then one ``Usage`` when the server reported it, then exactly one
``StreamEnd``. An exception ends the stream instead of ``StreamEnd``: ``PoolUnavailable`` when nothing was
streamed, ``StreamCut`` when the reply broke after its first token (never retried: a retry would repeat
text the caller has already shown).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# What became of a pool call: the values of ``InferenceCall.Outcome``, which records it.
CallOutcome = Literal["ok", "cut", "unavailable", "rejected", "cancelled"]


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCall:
    """One assembled tool call. ``arguments`` is the parsed JSON object, or None when the model's
    argument text was not valid JSON (``arguments_text`` keeps the raw text for repair)."""

    index: int
    id: str
    name: str
    arguments: dict[str, Any] | None
    arguments_text: str


@dataclass(frozen=True)
class ToolCalls:
    calls: tuple[ToolCall, ...]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class StreamEnd:
    finish_reason: str
    endpoint: str
    first_token_ms: float | None
    total_ms: float


StreamEvent = TextDelta | ToolCalls | Usage | StreamEnd


@dataclass
class ChatRequest:
    business_id: int
    messages: list[dict[str, Any]]
    # The conversation (or any stable key): the same key prefers the same endpoint, for its prefix cache.
    affinity_key: str | None = None
    max_tokens: int = 512
    temperature: float = 0.3
    top_p: float = 0.9
    model: str | None = None
    tools: list[dict[str, Any]] | None = None
    stop: list[str] | None = None
    # The messages carry image_url content parts: only endpoints that accept images may serve it.
    images: bool = False


@dataclass(frozen=True)
class ChatResult:
    """A whole reply from ``complete_chat``."""

    text: str
    finish_reason: str
    endpoint: str
    prompt_tokens: int
    completion_tokens: int
    first_token_ms: float | None
    total_ms: float
    tool_calls: tuple[ToolCall, ...] = field(default=())


class InferenceError(Exception):
    """Base of every error the pool client raises."""


class PoolUnavailable(InferenceError):
    """Nothing was streamed: every try failed, every circuit is open, or the deadline passed."""


class RequestRejected(InferenceError):
    """The server refused the request itself (HTTP 400/413/422): retrying elsewhere would not help."""

    def __init__(self, message: str, *, status: int, endpoint: str) -> None:
        super().__init__(message)
        self.status = status
        self.endpoint = endpoint


class StreamCut(InferenceError):
    """The reply broke after its first token; ``partial_text`` is what had been streamed."""

    def __init__(self, reason: str, *, partial_text: str, endpoint: str) -> None:
        super().__init__(f"reply cut after {len(partial_text)} characters on {endpoint}: {reason}")
        self.reason = reason
        self.partial_text = partial_text
        self.endpoint = endpoint


class BudgetExceeded(InferenceError):
    """The business hit its concurrency cap or its token budget for the current window."""
