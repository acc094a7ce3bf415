"""What the model adds to an answer composed from the data: its sentences, each shown only when the screen
(``agents.screen``) passes it. The caller (``agents.respond``) streams what passes to the customer."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TypedDict

from agents.screen import Screen, screen
from inference import types as inference
from inference.chat import stream_chat

# A model that keeps saying what may not be shown is stopped: it is not going to add anything useful.
MAX_DROPPED_SENTENCES = 3
# Between two sentences: white space after . ! ? or a line break (kept: the model's lists and paragraphs stay).
_SENTENCE_END = re.compile(r"((?<=[.!?])\s+|\s*\n\s*)")


class Dropped(TypedDict):
    """A sentence of the model's held back, and why (``agents.screen``): stored in the reply's checks."""

    sentence: str
    reason: str


class ModelTimings(TypedDict, total=False):
    pool_first_token: float  # ms from the request to the pool's first token


@dataclass
class ModelWords:
    """What the model adds to an answer: its sentences, each shown only when ``agents.screen`` passes it.

    The model streams into a buffer; a complete sentence is checked and then shown or dropped (and recorded
    in ``dropped``). The request is closed as soon as its limit of sentences is in or the
    model keeps saying what may not be shown: the server's slot is free at once. A model that fails leaves
    ``error`` set and the answer as it was."""

    raw: list[str] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    end: inference.StreamEnd | None = None
    error: str = ""
    timings: ModelTimings = field(default_factory=ModelTimings)

    def _take(self, sentence: str, gap: str, context: Screen, shown: list[str]) -> str | None:
        """The sentence as shown, after the white space the model put before it (a line break stays one),
        or None when the screen holds it back."""
        why = screen(sentence, context)
        if why is not None:
            self.dropped.append({"sentence": sentence[:300], "reason": why})
            return None
        breaks = min(2, gap.count("\n"))
        piece = ("\n" * breaks if breaks else _separator(shown)) + sentence if shown else sentence
        shown.append(piece)
        return piece

    async def stream(
        self, request: inference.ChatRequest, context: Screen, shown: list[str], *, limit: int
    ) -> AsyncGenerator[str | inference.Usage, None]:
        """Yield the model's sentences that pass, each as shown (also appended to ``shown``; at most
        ``limit``), and the pool's usage."""
        started = time.perf_counter()
        added_before = len(shown)
        pending = gap = ""
        try:
            async with contextlib.aclosing(stream_chat(request)) as events:
                async for event in events:
                    if isinstance(event, inference.TextDelta):
                        if not self.raw:
                            self.timings["pool_first_token"] = round(
                                (time.perf_counter() - started) * 1000, 2
                            )
                        self.raw.append(event.text)
                        # [sentence, gap, sentence, gap, ..., the sentence still coming]
                        *complete, pending = _SENTENCE_END.split(pending + event.text)
                        for sentence, after in zip(complete[::2], complete[1::2], strict=True):
                            if sentence.strip():
                                piece = self._take(sentence.strip(), gap, context, shown)
                                if piece is not None:
                                    yield piece
                                # A held-back sentence's line breaks still separate what comes next.
                                gap = (
                                    after
                                    if piece is not None
                                    else max(gap, after, key=lambda g: g.count("\n"))
                                )
                            else:
                                gap += after
                        added = len(shown) - added_before
                        if added >= limit or len(self.dropped) >= MAX_DROPPED_SENTENCES:
                            return  # closing the stream closes the upstream request
                    elif isinstance(event, inference.Usage):
                        yield event
                    elif isinstance(event, inference.StreamEnd):
                        self.end = event
            # The model finished: its last words form a sentence even without a full stop.
            if pending.strip() and (piece := self._take(pending.strip(), gap, context, shown)) is not None:
                yield piece
        except inference.InferenceError as exc:
            # The answer stands without the model's words (a busy pool, a cut stream, a refusal).
            self.error = f"{type(exc).__name__}: {exc}"


def joined(shown: list[str]) -> str:
    """The text of the pieces shown so far."""
    return "".join(shown).strip()


def _separator(shown: list[str]) -> str:
    if not shown:
        return ""
    return "\n" if "\n" in joined(shown) else " "
