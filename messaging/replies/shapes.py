"""What a reply stores beside its text: the shapes of ``Message.grounding``, ``Message.timings`` and
``Message.usage`` of an agent's reply, built by the engine (``messaging.replies.engine``) and saved by the
claim's final write (``messaging.replies.claim.reply_finish``)."""

from __future__ import annotations

from typing import TypedDict

from agents.respond import AnswerChecks, AnswerTimings


class ReplyChecks(AnswerChecks, total=False):
    """``Message.grounding`` of a reply: the answer's checks (``agents.respond``), whether it found nothing to
    ground on (read back by ``selectors.WINDOW_SQL``), or why the agent handed the conversation over instead
    (the dashboard's analytics count it)."""

    no_results: bool
    handoff: str


class ReplyTimings(AnswerTimings, total=False):
    """``Message.timings`` of a reply, in ms: the answer's (``agents.respond``; its ``first_token`` is the
    engine's own, counted from the task's start) and the engine's."""

    queue_wait: float  # from the task's queueing to its start (two clocks: the sender's and the worker's)
    lock: float
    claim: float
    stream_setup: float
    group_sends: int  # a count: message.created, the deltas and message.done


class ReplyUsage(TypedDict, total=False):
    """``Message.usage`` of a reply: the pool's token counts (empty when the model was not asked)."""

    prompt_tokens: int
    completion_tokens: int
