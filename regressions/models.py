"""A business's regression suite: questions generated from its own data, each with the facts a right reply
states, and the runs of those questions through the real agent (docs/admin.md, "Regression suite")."""

from __future__ import annotations

from typing import TypedDict

from django.conf import settings
from django.db import models


class Expected(TypedDict, total=False):
    """What a passing reply states (``RegressionCase.expected``): a price with its currency, a stock level
    (an ``Availability`` value), or phrases the reply contains (an FAQ passage's, a curated answer's)."""

    price: str  # "749.00"
    currency: str  # "EUR"
    stock: str  # "in_stock"
    contains: list[str]
    avoid: list[str]  # what a reply the owner marked wrong said: a passing reply does not say it again
    title: str  # the item the question names (its line of the reply is where the fact must be)
    external_id: str


class RegressionCase(models.Model):
    class Kind(models.TextChoices):
        PRICE = "price", "Price"
        STOCK = "stock", "Stock"
        FAQ = "faq", "FAQ"
        CURATED = "curated", "Curated answer"
        MARKED = "marked", "Reply you marked"

    business = models.ForeignKey(
        "businesses.Business", on_delete=models.CASCADE, related_name="regression_cases"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    question = models.CharField(max_length=600)
    expected = models.JSONField(default=dict)
    language = models.CharField(max_length=8, default="en")
    # What the case was generated from, stable across imports ("item:<external id>", "faq:<heading>",
    # "curated:<id>"): regeneration updates the case of the same source instead of adding another.
    source_key = models.CharField(max_length=600)
    item = models.ForeignKey(
        "catalogs.Item", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    chunk = models.ForeignKey(
        "catalogs.Chunk", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    curated = models.ForeignKey(
        "agents.CuratedAnswer", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    mark = models.ForeignKey(
        "regressions.ReplyMark", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # A case whose source is gone (an item retired, a heading removed) stays, inactive, for its history.
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["business", "kind", "source_key", "language"], name="regression_case_source"
            )
        ]
        indexes = [models.Index(fields=["business", "active"], name="regression_case_active")]

    def __str__(self) -> str:
        return self.question


class ReplyMark(models.Model):
    """An agent reply the owner marked right or wrong (in the inbox): the suite asks its question again, and
    expects the facts of a right reply (read from today's data: its item's price and stock) or anything but
    what a wrong one said."""

    class Verdict(models.TextChoices):
        GOOD = "good", "Right"
        BAD = "bad", "Wrong"

    business = models.ForeignKey("businesses.Business", on_delete=models.CASCADE, related_name="+")
    # The reply (messaging.Message, named by string: this app sits below messaging); kept when it goes.
    message = models.ForeignKey(
        "messaging.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    verdict = models.CharField(max_length=4, choices=Verdict.choices)
    question = models.CharField(max_length=600)
    reply_text = models.TextField()
    # What the reply answered (its grounding's "answer": price, stock, product, policy...) and the items it
    # showed, best first: a right price answer stays right when the price changes in the catalog.
    answer_kind = models.CharField(max_length=16, blank=True)
    external_ids = models.JSONField(default=list, blank=True)
    marked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["business", "message"],
                condition=models.Q(message__isnull=False),
                name="reply_mark_once",
            )
        ]

    def __str__(self) -> str:
        return f"{self.question} ({self.verdict})"


class RegressionRun(models.Model):
    class Trigger(models.TextChoices):
        MANUAL = "manual", "Run now (admin)"
        IMPORT = "import", "Catalog import"
        SETTINGS = "settings", "Agent settings changed"
        MODEL = "model", "Agent model changed"
        API = "api", "API or command"

    class State(models.TextChoices):
        PENDING = "pending", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Finished"
        FAILED = "failed", "Failed"

    business = models.ForeignKey(
        "businesses.Business", on_delete=models.CASCADE, related_name="regression_runs"
    )
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    # A run of the agent's draft settings (``draft``: the draft as it was, applied over the published
    # settings), before they are published; every other run asks with the published settings.
    on_draft = models.BooleanField(default=False)
    draft = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)  # the worker's lease, renewed after each case
    total = models.PositiveIntegerField(default=0)
    passed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    # Chat calls that reported usage, and their tokens (0 when the agent answered from the data alone).
    inference_calls = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    error_message = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["business", "-created_at"], name="regression_run_recent")]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.business_id}, {self.state})"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at).total_seconds(), 1)


class RegressionResult(models.Model):
    business = models.ForeignKey("businesses.Business", on_delete=models.CASCADE, related_name="+")
    run = models.ForeignKey(RegressionRun, on_delete=models.CASCADE, related_name="results")
    case = models.ForeignKey(RegressionCase, on_delete=models.CASCADE, related_name="results")
    passed = models.BooleanField()
    # The question and the facts as they were when this run asked (the case may be regenerated since).
    question = models.CharField(max_length=600)
    expected = models.JSONField(default=dict)
    reply_text = models.TextField(blank=True)
    missing = models.JSONField(default=list, blank=True)  # what the reply lacked, in words
    inference_calls = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["case__kind", "case_id"]
        constraints = [models.UniqueConstraint(fields=["run", "case"], name="regression_result_once")]

    def __str__(self) -> str:
        return f"{self.question}: {'pass' if self.passed else 'fail'}"
