"""A business's agent settings."""

from __future__ import annotations

import copy
from typing import Any, TypedDict

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from pgvector.django import VectorField

from catalogs.models import EMBEDDING_DIMENSIONS


def default_business_hours() -> dict[str, list[list[str]]]:
    """Every weekday open all day: an empty list of ranges for a day means closed."""
    return {day: [["00:00", "24:00"]] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


CHECKOUT_PLACEHOLDERS = ("{order_id}", "{items}")


def validate_checkout_url_template(value: str) -> None:
    """An https address whose only placeholders are ``{order_id}`` and ``{items}``."""
    if not value.startswith("https://"):
        raise ValidationError("The checkout address must start with https://.")
    rest = value
    for placeholder in CHECKOUT_PLACEHOLDERS:
        rest = rest.replace(placeholder, "")
    if "{" in rest or "}" in rest:
        raise ValidationError("Only {order_id} and {items} may stand in braces.")


class Theme(TypedDict):
    """How the widget looks (``Agent.theme``; the chat socket's ``ready`` frame)."""

    color: str
    position: str
    title: str
    avatar_url: str
    dark_mode: str


class Agent(models.Model):
    """A business's agent: who it is, how it answers, when it hands over, how the widget looks.

    One per business, created with defaults on first use (``agents.selectors.agent_for``).
    """

    class Grounding(models.TextChoices):
        CORRECT = "correct", "Correct wrong prices from the catalog"
        WITHHOLD = "withhold", "Withhold a reply with wrong facts (show cards instead)"
        FLAG = "flag", "Only flag (record) wrong facts"

    class DarkMode(models.TextChoices):
        AUTO = "auto", "Follow the visitor's system"
        LIGHT = "light", "Light"
        DARK = "dark", "Dark"

    class Position(models.TextChoices):
        RIGHT = "right", "Bottom right"
        LEFT = "left", "Bottom left"

    business = models.OneToOneField("businesses.Business", on_delete=models.CASCADE, related_name="agent")
    name = models.CharField(max_length=100, default="Assistant")
    instructions = models.TextField(
        blank=True, help_text="Persona and instructions: who the agent is and how it should behave."
    )
    business_facts = models.TextField(
        blank=True, help_text="Facts to always know: shipping, returns, opening hours, address."
    )
    greeting = models.CharField(max_length=500, default="Hi! How can I help you today?")
    # Empty: answer in whatever language the customer writes.
    languages = models.JSONField(default=list, blank=True, help_text='e.g. ["en", "de"]; empty = any')
    answer_in_customer_language = models.BooleanField(default=True)
    tone = models.CharField(max_length=100, default="friendly and concise")
    model = models.CharField(max_length=200, blank=True, help_text="Blank = LLAMA_MODEL")
    temperature = models.FloatField(default=0.3)
    top_p = models.FloatField(default=0.9)
    max_reply_tokens = models.PositiveIntegerField(default=400)
    # {"mon": [["09:00", "18:00"]], ...} in the business's time zone; a missing or empty day is closed.
    business_hours = models.JSONField(default=default_business_hours, blank=True)
    out_of_hours_message = models.TextField(
        blank=True, help_text="Added to replies outside business hours (e.g. when staff will answer)."
    )
    forbidden_topics = models.JSONField(
        default=list, blank=True, help_text="Topics the agent must not handle"
    )
    no_results_message = models.TextField(
        default="I couldn't find that in our catalog. Could you tell me a bit more about what you need?"
    )
    handoff_keywords = models.JSONField(
        default=list, blank=True, help_text="Extra phrases that ask for a person (built-in ones always apply)"
    )
    handoff_after_failures = models.PositiveSmallIntegerField(
        default=3, help_text="Hand over after this many replies in a row fail or find nothing; 0 = never"
    )
    handoff_topics = models.JSONField(
        default=list, blank=True, help_text="Topics that always go to a person (e.g. refunds, complaints)"
    )
    handoff_message = models.CharField(
        max_length=500, default="I'm connecting you with a member of our team. They'll reply here shortly."
    )
    # The AI disclosure in the business's own words, per language ({"de": "..."}); a language without one
    # reads agents.disclosure's default.
    disclosure_texts = models.JSONField(
        default=dict, blank=True, help_text='The automated-assistant notice per language, e.g. {"en": "..."}'
    )
    # Where a WhatsApp cart goes: a checkout page built from this template ({order_id}, {items}: SKU:quantity
    # pairs), or, when empty, staff (the conversation is handed over). messaging.meta.orders.
    checkout_url_template = models.CharField(
        max_length=1000,
        blank=True,
        validators=[validate_checkout_url_template],
        help_text="e.g. https://shop.example/checkout?order={order_id}&items={items}; empty = staff confirm orders",
    )
    # Not drafted: it changes what happens after a conversation, not what the agent says (docs/channels.md).
    ask_channel_rating = models.BooleanField(
        default=False,
        help_text="Ask WhatsApp, Messenger and Instagram customers to rate the conversation when staff close it.",
    )
    grounding_mode = models.CharField(max_length=10, choices=Grounding.choices, default=Grounding.CORRECT)
    withheld_message = models.CharField(max_length=500, default="Here is what I found in our catalog:")
    # Widget theme.
    theme_color = models.CharField(max_length=7, default="#2563eb")
    theme_position = models.CharField(max_length=5, choices=Position.choices, default=Position.RIGHT)
    theme_title = models.CharField(max_length=100, blank=True, help_text="Blank = the agent's name")
    theme_avatar_url = models.URLField(max_length=1000, blank=True)
    theme_dark_mode = models.CharField(max_length=5, choices=DarkMode.choices, default=DarkMode.AUTO)
    # Changed settings not yet published ({field: value}, DRAFTED_FIELDS only; empty: none): the
    # playground answers with them, customers do not (docs/admin.md, "Draft and publish").
    draft = models.JSONField(default=dict, blank=True)
    draft_saved_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    publish_requires_suite = models.BooleanField(
        default=True,
        help_text="Publish a draft only when the regression suite, run on it, keeps every answer that "
        "passed with the published settings.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.business_id})"

    def with_draft(self, draft: dict[str, Any] | None = None) -> Agent:
        """These settings with ``draft`` (default: the stored draft) applied, unsaved: what the playground
        and a run of the suite on the draft answer with."""
        values = self.draft if draft is None else draft
        if not values:
            return self
        drafted = copy.copy(self)
        for name, value in values.items():
            if name in DRAFTED_FIELDS:
                setattr(drafted, name, value)
        return drafted

    def theme(self) -> Theme:
        return {
            "color": self.theme_color,
            "position": self.theme_position,
            "title": self.theme_title or self.name,
            "avatar_url": self.theme_avatar_url,
            "dark_mode": self.theme_dark_mode,
        }


# The settings that change what the agent says: edited as a draft, tried in the playground and by the regression
# suite, then published. The widget's look is not among them (it is seen, not tested).
DRAFTED_FIELDS = frozenset(
    [
        "name",
        "greeting",
        "instructions",
        "business_facts",
        "tone",
        "languages",
        "answer_in_customer_language",
        "model",
        "temperature",
        "top_p",
        "max_reply_tokens",
        "business_hours",
        "out_of_hours_message",
        "forbidden_topics",
        "no_results_message",
        "handoff_keywords",
        "handoff_after_failures",
        "handoff_topics",
        "handoff_message",
        "grounding_mode",
        "withheld_message",
        "disclosure_texts",
        "checkout_url_template",
    ]
)


class CuratedAnswer(models.Model):
    """The right answer to a question, written by the business (from a reply in the inbox or playground, the
    admin's form, or a CSV import). A customer's question that means the same (``agents.selectors
    .curated_match``: its phrasings' embeddings) gets ``answer`` verbatim, still checked by grounding."""

    business = models.ForeignKey(
        "businesses.Business", on_delete=models.CASCADE, related_name="curated_answers"
    )
    question = models.CharField(max_length=500)
    paraphrases = models.JSONField(default=list, blank=True, help_text="Other ways customers ask it")
    answer = models.TextField()
    # The agent reply this answer corrects (messaging.Message, named by string: agents sits below messaging
    # and imports nothing of it); kept when the conversation goes.
    source_message = models.ForeignKey(
        "messaging.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-pk"]
        indexes = [models.Index(fields=["business", "is_active"], name="curated_business_active")]

    def __str__(self) -> str:
        return self.question

    def phrasings(self) -> list[str]:
        """The question and its paraphrases, each embedded and matched on its own."""
        return [self.question, *[p for p in self.paraphrases if p != self.question]]


class CuratedPhrasing(models.Model):
    """One way of asking a curated answer's question, with its embedding (the question is one, each
    paraphrase another): a customer's question matches the answer by its closest phrasing."""

    business = models.ForeignKey("businesses.Business", on_delete=models.CASCADE, related_name="+")
    curated = models.ForeignKey(CuratedAnswer, on_delete=models.CASCADE, related_name="phrasing_rows")
    text = models.CharField(max_length=500)
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS)
    embedding_model = models.CharField(max_length=200)

    class Meta:
        indexes = [models.Index(fields=["business"], name="curated_phrasing_business")]

    def __str__(self) -> str:
        return self.text
