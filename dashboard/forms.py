"""Forms of the admin: they parse and validate input; the services do the writing."""

from __future__ import annotations

import zoneinfo
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from businesses.services import normalize_origin
from catalogs.models import Availability
from messaging.models import Channel, Conversation

TIMEZONES = sorted(zoneinfo.available_timezones())


class SignUpForm(forms.Form):
    email = forms.EmailField(max_length=150)
    password = forms.CharField(widget=forms.PasswordInput, min_length=8, max_length=128)
    business_name = forms.CharField(max_length=200, label="Business name")
    timezone = forms.ChoiceField(choices=[(t, t) for t in TIMEZONES], initial="UTC")


class BusinessForm(forms.Form):
    name = forms.CharField(max_length=200, label="Business name")
    timezone = forms.ChoiceField(choices=[(t, t) for t in TIMEZONES], initial="UTC")


class OriginsForm(forms.Form):
    origins = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": "https://shop.example"}),
        required=False,
        help_text="One origin per line: scheme and host (and port if not the default), no path.",
    )

    def clean_origins(self) -> list[str]:
        lines = [line.strip() for line in self.cleaned_data["origins"].splitlines() if line.strip()]
        bad = []
        for line in lines:
            origin = normalize_origin(line)
            scheme, sep, host = origin.partition("://")
            if scheme not in ("http", "https") or not sep or not host or "/" in host or " " in host:
                bad.append(line)
        if bad:
            raise ValidationError("Not an origin (like https://shop.example): " + ", ".join(bad))
        if len(lines) > 50:
            raise ValidationError("At most 50 origins.")
        return lines


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses this key, e.g. 'nightly catalog sync'.")


UPLOAD_EXTENSIONS = (
    ".csv",
    ".tsv",
    ".txt",
    ".json",
    ".jsonl",
    ".ndjson",
    ".xlsx",
    ".xml",
    ".rss",
    ".atom",
    ".md",
    ".markdown",
    ".pdf",
)


class UploadForm(forms.Form):
    file = forms.FileField(
        help_text="CSV, TSV, XLSX, JSON/JSONL, RSS/Atom feeds; FAQs as Markdown, text or PDF."
    )
    mode = forms.ChoiceField(
        choices=[
            ("upsert", "Add and update items"),
            ("full", "Full sync: also retire items missing from the file"),
        ],
        initial="upsert",
    )

    def clean_file(self) -> object:
        upload = self.cleaned_data["file"]
        name = (upload.name or "").lower()
        if not name.endswith(UPLOAD_EXTENSIONS):
            raise ValidationError(
                "This file type is not supported. Use one of: " + ", ".join(UPLOAD_EXTENSIONS)
            )
        if upload.size == 0:
            raise ValidationError("The file is empty.")
        return upload


class ItemFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="Title or SKU")
    availability = forms.ChoiceField(
        required=False, choices=[("", "Any availability"), *Availability.choices]
    )
    category = forms.ChoiceField(required=False)
    retired = forms.BooleanField(required=False, label="Include retired")

    def __init__(self, *args: Any, categories: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        category = self.fields["category"]
        assert isinstance(category, forms.ChoiceField)
        category.choices = [("", "Any category")] + [(c, c) for c in categories]


class SearchPreviewForm(forms.Form):
    q = forms.CharField(
        max_length=500,
        label="A customer's question",
        widget=forms.TextInput(attrs={"placeholder": "do you have waterproof hiking boots under 100?"}),
    )
    limit = forms.IntegerField(required=False, min_value=1, max_value=50, initial=10)


class InboxFilterForm(forms.Form):
    channel = forms.ChoiceField(required=False, choices=[("", "All channels"), *Channel.choices])
    state = forms.ChoiceField(required=False, choices=[("", "Any state"), *Conversation.State.choices])
    needs_human = forms.BooleanField(required=False, label="Needs a human")


class StaffReplyForm(forms.Form):
    text = forms.CharField(
        max_length=4000,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Type a reply to the customer…"}),
        label="Reply",
    )

    def clean_text(self) -> str:
        text = self.cleaned_data["text"].strip()
        if not text:
            raise ValidationError("Write something to send.")
        return text
