"""Forms of the admin: they parse and validate input; the services do the writing."""

from __future__ import annotations

import re
import zoneinfo
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm, SetPasswordForm
from django.core.exceptions import ValidationError

from agents.disclosure import DISCLOSURE_LANGUAGES, DISCLOSURE_MAX_CHARS, disclosure_default
from agents.models import Agent
from businesses.models import ApiScope, Business, Membership, all_api_scopes
from businesses.services import normalize_origin
from catalogs.models import Availability, FeedSource
from catalogs.services.feeds import feed_url_normalize
from common.safe_fetch import FetchRefused, check_url
from dashboard.login_throttle import login_failed, login_succeeded, login_throttled
from messaging.models import Channel, ChannelAccount, Conversation
from outbox.models import SUBSCRIBABLE

TIMEZONES = sorted(zoneinfo.available_timezones())


class SignInForm(AuthenticationForm):
    """Django's sign-in form on the email in lower case (how sign-up stores it), throttled per account and
    per address before the password is checked (``dashboard.login_throttle``)."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "Please enter a correct email and password.",
        "throttled": "Too many sign-in attempts. Wait a few minutes and try again, or reset your password.",
    }

    def clean(self) -> dict[str, Any]:
        username = (self.cleaned_data.get("username") or "").strip().lower()
        self.cleaned_data["username"] = username
        if self.request is None or not username:
            return super().clean()
        if login_throttled(self.request, username):
            raise ValidationError(self.error_messages["throttled"], code="throttled")
        try:
            cleaned = super().clean()
        except ValidationError:
            login_failed(self.request, username)
            raise
        login_succeeded(self.request, username)
        return cleaned


class SignUpForm(forms.Form):
    """The first step of sign-up: the address to confirm and the business to create once it is confirmed.
    The password is chosen on the confirmation link's page (``NewPasswordForm``), so nothing is stored before."""

    email = forms.EmailField(max_length=150)
    business_name = forms.CharField(max_length=200, label="Business name")
    timezone = forms.ChoiceField(choices=[(t, t) for t in TIMEZONES], initial="UTC")


class NewPasswordForm(SetPasswordForm):  # type: ignore[type-arg]
    """Django's "new password" pair with its validators, for an account that does not exist yet: ``email``
    is what the similarity check compares against. It only validates; a service creates the account."""

    def __init__(self, email: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(get_user_model()(username=email, email=email), *args, **kwargs)

    def save(self, commit: bool = True) -> Any:
        raise NotImplementedError("the sign-up and invitation services create the account")


class InvitationForm(forms.Form):
    email = forms.EmailField(max_length=150)
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.STAFF)


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


class DemoPageForm(forms.Form):
    demo_page_enabled = forms.BooleanField(
        required=False,
        label="Publish a demo page",
        help_text="Anyone with the address can see your catalog and chat with your agent there.",
    )


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses this key, e.g. 'nightly catalog sync'.")
    scopes = forms.MultipleChoiceField(
        choices=ApiScope.choices,
        initial=all_api_scopes,
        widget=forms.CheckboxSelectMultiple,
        help_text='Give a key only what its script needs (docs/api.md, "Scopes").',
        error_messages={"required": "Pick at least one scope."},
    )


class WebhookEndpointForm(forms.Form):
    """The URL and events of a new webhook endpoint; the address rule is the service's
    (``webhooks.services.endpoint_validate``), whose errors the view puts on these fields."""

    url = forms.URLField(
        max_length=500,
        assume_scheme="https",
        help_text="Where we POST the events, e.g. https://shop.example/hooks/bizagent.",
    )
    description = forms.CharField(max_length=200, required=False, help_text="What receives them (optional).")
    events = forms.MultipleChoiceField(
        choices=[(t.value, f"{t.value}: {t.label}") for t in SUBSCRIBABLE],
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Choose at least one event."},
    )


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


class ImportModeForm(forms.Form):
    """Upsert or full sync, with the owner's explicit consent to a full sync (an upload or a URL)."""

    mode = forms.ChoiceField(
        choices=[
            ("upsert", "Add and update items"),
            ("full", "Full sync: also retire items missing from the file"),
        ],
        initial="upsert",
    )
    # A full sync retires every item the file does not list: a wrong file empties the shop's catalog.
    confirm_full_sync = forms.BooleanField(
        required=False,
        label="I understand: items missing from this file will be retired and the agent will stop offering them",
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("mode") == "full" and not cleaned.get("confirm_full_sync"):
            self.add_error(
                "confirm_full_sync",
                "Confirm the full sync: every item missing from the file will be retired.",
            )
        return cleaned


class UploadForm(ImportModeForm):
    file = forms.FileField(
        help_text="CSV, TSV, XLSX, JSON/JSONL, RSS/Atom feeds; FAQs as Markdown, text or PDF."
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


def _fetchable_url(url: str) -> str:
    """A URL the fetcher will accept (``common.safe_fetch``: http(s), a public address), else the reason."""
    try:
        check_url(url)
    except FetchRefused as exc:
        raise ValidationError(f"This URL cannot be fetched: {exc}.") from exc
    return url


class UrlImportForm(ImportModeForm):
    url = forms.URLField(
        max_length=2000,
        label="File URL",
        assume_scheme="https",
        help_text="A catalog or FAQ file on the web (http or https); fetched once, on our side.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Beside the upload form on one page: ids of its own.
        kwargs.setdefault("auto_id", "url_import_%s")
        super().__init__(*args, **kwargs)

    def clean_url(self) -> str:
        return _fetchable_url(self.cleaned_data["url"])


# Intervals an owner may choose for a feed (minutes), the shortest ones cut by FEED_MIN_INTERVAL_MINUTES.
FEED_INTERVALS = [
    (15, "every 15 minutes"),
    (30, "every 30 minutes"),
    (60, "every hour"),
    (180, "every 3 hours"),
    (360, "every 6 hours"),
    (720, "every 12 hours"),
    (1440, "every day"),
    (10080, "every week"),
]


class FeedScheduleForm(forms.Form):
    interval_minutes = forms.TypedChoiceField(coerce=int, label="Fetch", initial=60)
    shrink_threshold_percent = forms.IntegerField(
        min_value=1,
        max_value=100,
        initial=30,
        label="Hold a run that would retire more than (%)",
        help_text="Of the items now active. A held run changes nothing until you confirm it.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["interval_minutes"]
        assert isinstance(field, forms.TypedChoiceField)
        field.choices = [(m, label) for m, label in FEED_INTERVALS if m >= settings.FEED_MIN_INTERVAL_MINUTES]


class FeedForm(FeedScheduleForm):
    url = forms.URLField(
        max_length=2000,
        label="URL",
        assume_scheme="https",
        help_text="The feed file's URL, or the shop's address for Shopify and WooCommerce.",
    )
    kind = forms.ChoiceField(choices=FeedSource.Kind.choices, initial=FeedSource.Kind.FEED)
    field_order = ["url", "kind", "interval_minutes", "shrink_threshold_percent"]

    def __init__(self, *args: Any, business: Business, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.business = business

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        url, kind = cleaned.get("url"), cleaned.get("kind")
        if url and kind:
            url = cleaned["url"] = feed_url_normalize(url, kind)
            if FeedSource.objects.filter(business=self.business, url=url).exists():
                self.add_error("url", "This business already has a feed with this URL.")
                return cleaned
            try:
                _fetchable_url(url)
            except ValidationError as exc:
                self.add_error("url", exc)
        return cleaned


class FeedEditForm(FeedScheduleForm):
    is_active = forms.BooleanField(required=False, label="Active (fetched on schedule)")


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
        text: str = self.cleaned_data["text"].strip()
        if not text:
            raise ValidationError("Write something to send.")
        return text


DAYS = (
    ("mon", "Monday"),
    ("tue", "Tuesday"),
    ("wed", "Wednesday"),
    ("thu", "Thursday"),
    ("fri", "Friday"),
    ("sat", "Saturday"),
    ("sun", "Sunday"),
)
_HOURS = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)\s*-\s*([01]\d|2[0-4]):([0-5]\d)$")


def _lines(raw: str) -> list[str]:
    """One entry per line or comma, blanks dropped, duplicates removed in order."""
    out: list[str] = []
    for part in re.split(r"[\n,]", raw):
        part = part.strip()
        if part and part not in out:
            out.append(part)
    return out


class AgentForm(forms.Form):
    """The agent's settings as a person edits them (lists as lines, opening hours per day)."""

    name = forms.CharField(max_length=100)
    greeting = forms.CharField(max_length=500)
    instructions = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        max_length=8000,
        label="Persona and instructions",
    )
    business_facts = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=8000,
        help_text="Shipping, returns, opening hours, address: facts the agent always knows.",
    )
    tone = forms.CharField(max_length=100)
    languages = forms.CharField(
        required=False,
        max_length=200,
        help_text="Language codes, comma-separated (e.g. en, de); empty = any.",
    )
    answer_in_customer_language = forms.BooleanField(required=False)
    temperature = forms.FloatField(min_value=0.0, max_value=2.0)
    max_reply_tokens = forms.IntegerField(min_value=16, max_value=4000, label="Max reply length (tokens)")
    no_results_message = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}), max_length=1000, label="When nothing relevant is found"
    )
    forbidden_topics = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Topics the agent must not handle, one per line.",
    )
    handoff_keywords = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Extra phrases that ask for a person, one per line.",
    )
    handoff_topics = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Topics that always go to a person, one per line.",
    )
    handoff_after_failures = forms.IntegerField(
        min_value=0, max_value=20, help_text="Hand over after this many failed replies in a row; 0 = never."
    )
    handoff_message = forms.CharField(max_length=500)
    grounding_mode = forms.ChoiceField(
        choices=Agent.Grounding.choices, label="When a reply states a wrong price or product"
    )
    out_of_hours_message = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), max_length=1000
    )
    checkout_url_template = forms.CharField(
        required=False,
        max_length=1000,
        label="Checkout address for WhatsApp orders",
        help_text="e.g. https://shop.example/checkout?order={order_id}&items={items} ({items}: SKU:quantity "
        "pairs). Empty: a person confirms each order.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for day, label in DAYS:
            self.fields[f"hours_{day}"] = forms.CharField(
                required=False,
                max_length=100,
                label=label,
                help_text="e.g. 09:00-12:00, 13:00-18:00; empty = closed",
            )
        for language, name in DISCLOSURE_LANGUAGES.items():
            self.fields[f"disclosure_{language}"] = forms.CharField(
                required=False,
                max_length=DISCLOSURE_MAX_CHARS,
                widget=forms.Textarea(attrs={"rows": 2}),
                label=name,
                help_text="Empty = the default.",
            )

    @classmethod
    def initial_from(cls, agent: Agent) -> dict[str, Any]:
        initial: dict[str, Any] = {name: getattr(agent, name) for name in cls.base_fields}
        for name in ("forbidden_topics", "handoff_keywords", "handoff_topics"):
            initial[name] = "\n".join(getattr(agent, name))
        initial["languages"] = ", ".join(agent.languages)
        for day, _ in DAYS:
            initial[f"hours_{day}"] = ", ".join(f"{a}-{b}" for a, b in agent.business_hours.get(day, []))
        for language in DISCLOSURE_LANGUAGES:
            initial[f"disclosure_{language}"] = (agent.disclosure_texts or {}).get(
                language
            ) or disclosure_default(language)
        return initial

    def clean_languages(self) -> list[str]:
        codes = [c.lower() for c in _lines(self.cleaned_data["languages"])]
        bad = [c for c in codes if not re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]{2,8})?", c)]
        if bad:
            raise ValidationError("Not a language code: " + ", ".join(bad))
        return codes

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for name in ("forbidden_topics", "handoff_keywords", "handoff_topics"):
            if name in data:
                data[name] = [line[:200] for line in _lines(data[name])][:50]
        hours: dict[str, list[list[str]]] = {}
        for day, label in DAYS:
            ranges = []
            for part in _lines(data.pop(f"hours_{day}", "") or ""):
                match = _HOURS.match(part)
                if (
                    not match
                    or f"{match[1]}:{match[2]}" >= f"{match[3]}:{match[4]}"
                    or (match[3] == "24" and match[4] != "00")
                ):
                    self.add_error(f"hours_{day}", f"{label}: write ranges like 09:00-18:00 (not {part!r}).")
                    continue
                ranges.append([f"{match[1]}:{match[2]}", f"{match[3]}:{match[4]}"])
            hours[day] = ranges
        data["business_hours"] = hours
        # Only the texts the business changed are kept: the others follow the defaults as they improve.
        texts: dict[str, str] = {}
        for language in DISCLOSURE_LANGUAGES:
            text = " ".join((data.pop(f"disclosure_{language}", "") or "").split())
            if text and text != disclosure_default(language):
                texts[language] = text
        data["disclosure_texts"] = texts
        return data


HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


class ThemeForm(forms.Form):
    theme_color = forms.CharField(
        max_length=7, label="Colour", widget=forms.TextInput(attrs={"type": "color"})
    )
    theme_position = forms.ChoiceField(choices=Agent.Position.choices, label="Position")
    theme_title = forms.CharField(
        required=False, max_length=100, label="Title", help_text="Blank = the agent's name."
    )
    theme_avatar_url = forms.URLField(
        required=False, max_length=1000, label="Avatar image URL", assume_scheme="https"
    )
    theme_dark_mode = forms.ChoiceField(choices=Agent.DarkMode.choices, label="Light or dark")

    def clean_theme_color(self) -> str:
        colour: str = self.cleaned_data["theme_color"]
        if not HEX_COLOUR.match(colour):
            raise ValidationError("A colour like #2563eb.")
        return colour.lower()

    def clean_theme_avatar_url(self) -> str:
        url: str = self.cleaned_data["theme_avatar_url"]
        if url and not url.startswith("https://"):
            raise ValidationError("Use an https:// address, so that the image loads on secure shops.")
        return url


class ChannelConnectForm(forms.Form):
    """The fields of issue 6 for one Meta account; which ids are required depends on the kind."""

    REQUIRED_IDS = {
        "whatsapp": ("phone_number_id",),
        "messenger": ("page_id",),
        "instagram": ("instagram_account_id",),
    }

    kind = forms.ChoiceField(choices=ChannelAccount.Kind.choices, widget=forms.HiddenInput)
    name = forms.CharField(required=False, max_length=100, help_text="For you, e.g. 'Main shop number'.")
    waba_id = forms.CharField(required=False, max_length=64, label="WhatsApp Business Account ID")
    phone_number_id = forms.CharField(required=False, max_length=64, label="Phone number ID")
    display_phone_number = forms.CharField(required=False, max_length=32, label="Display phone number")
    page_id = forms.CharField(required=False, max_length=64, label="Facebook Page ID")
    instagram_account_id = forms.CharField(required=False, max_length=64, label="Instagram account ID")
    access_token = forms.CharField(
        max_length=2000,
        widget=forms.PasswordInput(render_value=False),
        label="Access token",
        help_text="A system-user or page access token. Stored encrypted; never shown again.",
    )
    app_secret = forms.CharField(
        required=False,
        max_length=200,
        widget=forms.PasswordInput(render_value=False),
        label="App secret",
        help_text="Of your Meta app; leave empty to use the service's own app.",
    )
    verify_token = forms.CharField(
        max_length=200,
        min_length=16,
        label="Verify token",
        help_text="Paste this into Meta's webhook settings together with the callback URL.",
    )
    wa_template_name = forms.CharField(
        required=False, max_length=512, label="Template after 24 hours (WhatsApp)"
    )
    template_language = forms.CharField(required=False, max_length=16, initial="en_US")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for field in self.REQUIRED_IDS.get(data.get("kind", ""), ()):
            value = (data.get(field) or "").strip()
            if not value:
                self.add_error(field, "Required for this channel.")
            elif not value.isdigit():
                self.add_error(field, "Meta ids are numbers.")
        return data


class CuratedAnswerForm(forms.Form):
    """A curated answer: the question, other ways to ask it (one per line), and the right answer."""

    question = forms.CharField(
        max_length=500, widget=forms.TextInput(attrs={"placeholder": "Do you ship to Switzerland?"})
    )
    paraphrases = forms.CharField(
        required=False,
        max_length=10000,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Can I order from Zurich?"}),
        help_text="Other ways customers ask it, one per line. Each is matched on its own.",
    )
    answer = forms.CharField(
        max_length=4000,
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="Sent as written. Product prices and stock in it are still checked against the catalog.",
    )
    is_active = forms.BooleanField(required=False, initial=True, label="Active (the agent uses it)")

    def clean_paraphrases(self) -> list[str]:
        raw: str = self.cleaned_data.get("paraphrases") or ""
        return [line.strip() for line in raw.splitlines() if line.strip()]


class CuratedImportForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text='Columns: question, answer, paraphrases (separated by "|"). A known question is updated.',
    )
