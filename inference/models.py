"""The inference pool's rows: endpoints managed in the admin, and one usage record per call."""

from __future__ import annotations

from django.core.validators import MinValueValidator
from django.db import models

from businesses.crypto import EncryptedTextField


class InferenceEndpoint(models.Model):
    """An OpenAI-compatible server added from the admin (joins those in ``LLAMA_POOL``)."""

    class Kind(models.TextChoices):
        ANY = "any", "Chat and embeddings"
        CHAT = "chat", "Chat only"
        EMBEDDINGS = "embeddings", "Embeddings only"
        AUDIO = "audio", "Speech to text (voice notes)"

    name = models.CharField(max_length=100)
    base_url = models.URLField(unique=True, help_text="Without /v1, e.g. http://gpu1:8000")
    weight = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    # Sent as a bearer token; blank = LLAMA_API_KEY. Encrypted at rest (FIELD_ENCRYPTION_KEY).
    api_key = EncryptedTextField(blank=True)
    model = models.CharField(max_length=200, blank=True, help_text="Served model name; blank = LLAMA_MODEL")
    max_concurrency = models.PositiveIntegerField(
        default=0, help_text="Requests in flight across all workers; 0 = LLAMA_ENDPOINT_MAX_CONCURRENCY"
    )
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.ANY)
    accepts_images = models.BooleanField(
        default=False,
        help_text="Serves a vision model that takes OpenAI-style image_url content parts (customers' photos)",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # The table was created while the model lived in agents (inference/migrations/0001).
        db_table = "agents_inferenceendpoint"

    def __str__(self) -> str:
        return f"{self.name} ({self.base_url})"


class InferenceCall(models.Model):
    """One call to the pool, written after it ended (never inside a transaction held across the call)."""

    class Kind(models.TextChoices):
        CHAT = "chat", "Chat"
        EMBEDDINGS = "embeddings", "Embeddings"
        AUDIO = "audio", "Transcription"

    class Outcome(models.TextChoices):
        OK = "ok", "Complete"
        CUT = "cut", "Cut after the first token"
        UNAVAILABLE = "unavailable", "No endpoint could answer"
        REJECTED = "rejected", "Rejected by the server"
        CANCELLED = "cancelled", "Cancelled by the caller"

    # Null for operator calls (llama_pool chat without --business) and embeddings.
    business = models.ForeignKey(
        "businesses.Business", null=True, blank=True, on_delete=models.CASCADE, related_name="inference_calls"
    )
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.CHAT)
    endpoint = models.CharField(max_length=300, blank=True, help_text="The endpoint of the last try")
    model = models.CharField(max_length=200, blank=True)
    outcome = models.CharField(max_length=12, choices=Outcome.choices)
    error = models.TextField(blank=True)
    tries = models.PositiveSmallIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    first_token_ms = models.FloatField(null=True, blank=True)
    total_ms = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "agents_inferencecall"
        indexes = [models.Index(fields=["business", "created_at"], name="inferencecall_business_time")]

    def __str__(self) -> str:
        return f"{self.kind} {self.outcome} via {self.endpoint or '-'}"
