"""Each form of the admin: bad input is refused with a message and changes nothing; good input does the write."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from agents.disclosure import DEFAULT_DISCLOSURES
from agents.models import Agent
from agents.selectors import agent_for
from businesses.models import ApiKey, Business, Membership
from catalogs.models import Import
from dashboard.forms import AgentForm
from dashboard.signup_tokens import signup_token
from messaging.meta.selectors import webhook_url
from messaging.models import ChannelAccount
from tests.dashboard.conftest import Tenant

pytestmark = pytest.mark.django_db

GOOD_SIGNUP = {"email": "ana@shop.example", "business_name": "Ana's Bikes", "timezone": "Europe/Lisbon"}
PASSWORD = "a-long-unusual-passphrase-42"


def _owner_client(tenant: Tenant) -> Client:
    client = Client()
    client.force_login(tenant.owner)
    return client


def _confirm_url(email: str = "ana@shop.example") -> str:
    token = signup_token(email=email, business_name="Ana's Bikes", timezone_name="Europe/Lisbon")
    return f"/accounts/signup/confirm/{token}/"


def test_signup_asks_for_the_email_first_and_creates_nothing_before_its_link() -> None:
    response = Client().post("/accounts/signup/", GOOD_SIGNUP)
    assert response.status_code == 302
    assert response["Location"] == "/accounts/signup/sent/"
    assert (User.objects.count(), Business.objects.count()) == (0, 0)


def test_the_signup_link_creates_account_and_business_and_signs_in() -> None:
    client = Client()
    assert client.get(_confirm_url()).status_code == 200
    response = client.post(_confirm_url(), {"new_password1": PASSWORD, "new_password2": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/app/anas-bikes/"
    user = User.objects.get(username="ana@shop.example")
    business = Business.objects.get(slug="anas-bikes")
    assert (business.name, business.timezone) == ("Ana's Bikes", "Europe/Lisbon")
    assert Membership.objects.get(business=business).user == user
    assert Membership.objects.get(business=business).role == "owner"
    assert client.get("/app/anas-bikes/").status_code == 200


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"email": "not-an-email"}, "email", "Enter a valid email address."),
        ({"business_name": "   "}, "business_name", "This field is required."),
        (
            {"timezone": "Mars/Olympus"},
            "timezone",
            "Select a valid choice. Mars/Olympus is not one of the available choices.",
        ),
    ],
)
def test_signup_refuses_bad_input_and_creates_nothing(
    change: dict[str, str], field: str, message: str
) -> None:
    response = Client().post("/accounts/signup/", {**GOOD_SIGNUP, **change})
    assert response.status_code == 200
    assert message in response.context["form"].errors[field]
    assert User.objects.count() == 0
    assert Business.objects.count() == 0


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("password", "This password is too common."),
        ("ana@shop.example1", "The password is too similar to the username."),
    ],
)
def test_the_signup_link_refuses_a_weak_password_and_creates_nothing(password: str, message: str) -> None:
    response = Client().post(_confirm_url(), {"new_password1": password, "new_password2": password})
    assert response.status_code == 200
    assert message in response.context["form"].errors["new_password2"]
    assert (User.objects.count(), Business.objects.count()) == (0, 0)


def test_signup_with_a_taken_email_answers_like_a_new_one_and_its_link_creates_nothing(
    tenant_a: Tenant,
) -> None:
    users, businesses = User.objects.count(), Business.objects.count()
    response = Client().post("/accounts/signup/", {**GOOD_SIGNUP, "email": tenant_a.owner.username.upper()})
    assert response.status_code == 302
    assert response["Location"] == "/accounts/signup/sent/"
    response = Client().post(
        _confirm_url(tenant_a.owner.username), {"new_password1": PASSWORD, "new_password2": PASSWORD}
    )
    assert response.status_code == 400
    assert (
        "This link has already been used: the account exists. Sign in instead." in response.content.decode()
    )
    assert (User.objects.count(), Business.objects.count()) == (users, businesses)


def test_login_and_logout() -> None:
    User.objects.create_user(username="bo@shop.example", password="a-long-unusual-passphrase-42")
    client = Client()
    bad = client.post("/accounts/login/", {"username": "bo@shop.example", "password": "wrong"})
    assert bad.status_code == 200
    assert "_auth_user_id" not in client.session
    good = client.post(
        "/accounts/login/", {"username": "bo@shop.example", "password": "a-long-unusual-passphrase-42"}
    )
    assert good["Location"] == "/app/"
    # No business yet: the person is asked to create one.
    assert client.get("/app/")["Location"] == "/app/new/"
    client.post("/accounts/logout/")
    assert "_auth_user_id" not in client.session


def test_root_redirects_to_the_app() -> None:
    assert Client().get("/")["Location"] == "/app/"
    assert Client().get("/app/")["Location"] == "/accounts/login/?next=/app/"


def test_allowed_origins_are_validated_and_normalised(tenant_a: Tenant) -> None:
    client = _owner_client(tenant_a)
    url = f"/app/{tenant_a.business.slug}/install/origins/"
    before = list(tenant_a.business.allowed_origins)
    bad = client.post(url, {"origins": "https://ok.example\nshop.example/path\nftp://x.example"})
    assert bad.status_code == 400
    assert bad.context["origins_form"].errors["origins"] == [
        "Not an origin (like https://shop.example): shop.example/path, ftp://x.example"
    ]
    tenant_a.business.refresh_from_db()
    assert tenant_a.business.allowed_origins == before
    good = client.post(url, {"origins": "https://Shop.Example:443/\nhttp://localhost:8080\n\n"})
    assert good.status_code == 302
    tenant_a.business.refresh_from_db()
    assert tenant_a.business.allowed_origins == ["http://localhost:8080", "https://shop.example"]


def test_install_page_shows_the_snippet(tenant_a: Tenant, settings: object) -> None:
    html = _owner_client(tenant_a).get(f"/app/{tenant_a.business.slug}/install/").content.decode()
    assert (
        f"&lt;script src=&quot;http://127.0.0.1:8000/widget.js&quot; data-agent=&quot;{tenant_a.business.widget_key}&quot; async&gt;&lt;/script&gt;"
        in html
    )


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"theme_color": "blue"}, "theme_color", "A colour like #2563eb."),
        (
            {"theme_avatar_url": "http://img.example/a.png"},
            "theme_avatar_url",
            "Use an https:// address, so that the image loads on secure shops.",
        ),
        (
            {"theme_position": "top"},
            "theme_position",
            "Select a valid choice. top is not one of the available choices.",
        ),
    ],
)
def test_theme_refuses_bad_input(tenant_a: Tenant, change: dict[str, str], field: str, message: str) -> None:
    agent = agent_for(tenant_a.business)
    form = {
        "theme_color": "#ff0000",
        "theme_position": "left",
        "theme_title": "Help",
        "theme_avatar_url": "",
        "theme_dark_mode": "dark",
    }
    response = _owner_client(tenant_a).post(
        f"/app/{tenant_a.business.slug}/install/theme/", {**form, **change}
    )
    assert response.status_code == 400
    assert response.context["theme_form"].errors[field] == [message]
    assert Agent.objects.get(pk=agent.pk).theme() == agent.theme()


def test_theme_is_saved(tenant_a: Tenant) -> None:
    form = {
        "theme_color": "#FF0000",
        "theme_position": "left",
        "theme_title": "Help",
        "theme_avatar_url": "https://img.example/a.png",
        "theme_dark_mode": "dark",
    }
    response = _owner_client(tenant_a).post(f"/app/{tenant_a.business.slug}/install/theme/", form)
    assert response.status_code == 302
    assert agent_for(tenant_a.business).theme() == {
        "color": "#ff0000",
        "position": "left",
        "title": "Help",
        "avatar_url": "https://img.example/a.png",
        "dark_mode": "dark",
    }


def test_api_key_is_shown_once_and_can_be_revoked(tenant_a: Tenant) -> None:
    client = _owner_client(tenant_a)
    url = f"/app/{tenant_a.business.slug}/api-keys/"
    keys_before = ApiKey.objects.filter(business=tenant_a.business).count()
    assert client.post(url, {"name": "", "scopes": ["read"]}).status_code == 400
    refused = client.post(url, {"name": "no scope"})
    assert refused.status_code == 400
    assert "Pick at least one scope." in refused.content.decode()
    assert client.post(url, {"name": "x", "scopes": ["admin"]}).status_code == 400
    assert ApiKey.objects.filter(business=tenant_a.business).count() == keys_before
    response = client.post(url, {"name": "nightly sync", "scopes": ["write", "read"]})
    raw = response.context["issued"].raw_key
    assert raw.startswith("bza_")
    assert raw in response.content.decode()
    key = ApiKey.objects.get(business=tenant_a.business, name="nightly sync")
    assert key.scopes == ["read", "write"]
    assert ApiKey.objects.filter(business=tenant_a.business).count() == keys_before + 1
    later = client.get(url).content.decode()
    assert raw not in later
    assert key.prefix in later
    assert client.post(f"{url}{key.pk}/revoke/").status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None


AGENT_FORM = {
    "name": "Bikey",
    "greeting": "Hello!",
    "instructions": "Be helpful.",
    "business_facts": "Free shipping over 50 EUR.",
    "tone": "warm",
    "languages": "en, PT",
    "answer_in_customer_language": "on",
    "temperature": "0.5",
    "max_reply_tokens": "300",
    "no_results_message": "Not found.",
    "forbidden_topics": "politics\nmedical advice",
    "handoff_keywords": "talk to a person",
    "handoff_topics": "refunds",
    "handoff_after_failures": "2",
    "handoff_message": "One moment.",
    "grounding_mode": "withhold",
    "out_of_hours_message": "",
    "hours_mon": "09:00-12:00, 13:00-18:00",
    "hours_tue": "09:00-18:00",
    "hours_sun": "",
}


def test_agent_settings_are_saved_as_a_draft_and_published(tenant_a: Tenant) -> None:
    client = _owner_client(tenant_a)
    slug = tenant_a.business.slug
    before = agent_for(tenant_a.business)
    response = client.post(f"/app/{slug}/agent/", AGENT_FORM)
    assert response.status_code == 302
    agent = agent_for(tenant_a.business)
    # Customers still get the published settings; the draft holds the changes.
    assert (agent.name, agent.grounding_mode) == (before.name, before.grounding_mode)
    assert agent.draft["name"] == "Bikey" and agent.draft["grounding_mode"] == "withhold"
    page = client.get(f"/app/{slug}/agent/")
    assert page.context["form"].initial["name"] == "Bikey"  # the form shows the draft
    # The suite is generated from the tenant's item and checks the draft: publishing waits for it.
    assert page.context["check"].state == "running"
    assert client.post(f"/app/{slug}/agent/publish/").status_code == 302
    assert agent_for(tenant_a.business).name == before.name
    # Unless the owner turns that rule off.
    assert client.post(f"/app/{slug}/agent/publish-rule/", {}).status_code == 302
    assert agent_for(tenant_a.business).publish_requires_suite is False
    assert client.post(f"/app/{slug}/agent/publish/").status_code == 302
    agent = agent_for(tenant_a.business)
    assert (agent.name, agent.languages, agent.forbidden_topics, agent.grounding_mode) == (
        "Bikey",
        ["en", "pt"],
        ["politics", "medical advice"],
        "withhold",
    )
    assert agent.business_hours["mon"] == [["09:00", "12:00"], ["13:00", "18:00"]]
    assert agent.business_hours["sun"] == []
    assert agent.draft == {} and agent.published_at is not None


def test_a_draft_can_be_discarded_and_a_draft_equal_to_the_published_settings_is_none(
    tenant_a: Tenant,
) -> None:
    client = _owner_client(tenant_a)
    slug = tenant_a.business.slug
    client.post(f"/app/{slug}/agent/", AGENT_FORM)
    assert client.post(f"/app/{slug}/agent/discard/").status_code == 302
    agent = agent_for(tenant_a.business)
    assert agent.draft == {} and agent.name != "Bikey"
    # Saving the published values back makes no draft.
    same = {
        **AGENT_FORM,
        **{k: v for k, v in AgentForm.initial_from(agent).items() if not isinstance(v, list)},
    }
    same["answer_in_customer_language"] = "on" if agent.answer_in_customer_language else ""
    client.post(f"/app/{slug}/agent/", same)
    assert agent_for(tenant_a.business).draft == {}


def test_the_checkout_address_for_orders_is_checked(tenant_a: Tenant) -> None:
    client = _owner_client(tenant_a)
    url = f"/app/{tenant_a.business.slug}/agent/"
    bad = client.post(url, {**AGENT_FORM, "checkout_url_template": "https://shop.example/c?cart={cart}"})
    assert bad.status_code == 400
    assert bad.context["form"].errors["checkout_url_template"] == [
        "Only {order_id} and {items} may stand in braces."
    ]
    assert agent_for(tenant_a.business).checkout_url_template == ""
    template = "https://shop.example/checkout?order={order_id}&items={items}"
    assert client.post(url, {**AGENT_FORM, "checkout_url_template": template}).status_code == 302
    assert agent_for(tenant_a.business).with_draft().checkout_url_template == template  # in the draft


def test_the_ai_disclosure_is_edited_per_language_and_only_changed_texts_are_kept(tenant_a: Tenant) -> None:
    client = _owner_client(tenant_a)
    url = f"/app/{tenant_a.business.slug}/agent/"
    # The form shows each language's text: the defaults until the business writes its own.
    form = client.get(url).context["form"]
    assert form["disclosure_fr"].value() == DEFAULT_DISCLOSURES["fr"]
    own = "Hier antwortet unser Bot. Schreiben Sie 'Mitarbeiter', und wir übernehmen."
    response = client.post(
        url,
        {
            **AGENT_FORM,
            "disclosure_de": f"  {own} ",
            "disclosure_en": DEFAULT_DISCLOSURES["en"],
            "disclosure_fr": "",
        },
    )
    assert response.status_code == 302
    # The default left as it was and the emptied one follow the defaults; only the changed text is stored.
    assert agent_for(tenant_a.business).with_draft().disclosure_texts == {"de": own}  # in the draft
    assert client.get(url).context["form"]["disclosure_de"].value() == own
    too_long = client.post(url, {**AGENT_FORM, "disclosure_it": "x" * 501})
    assert too_long.status_code == 400
    assert too_long.context["form"].errors["disclosure_it"] == [
        "Ensure this value has at most 500 characters (it has 501)."
    ]
    assert agent_for(tenant_a.business).with_draft().disclosure_texts == {"de": own}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            {"hours_mon": "18:00-09:00"},
            "hours_mon",
            "Monday: write ranges like 09:00-18:00 (not '18:00-09:00').",
        ),
        ({"hours_tue": "all day"}, "hours_tue", "Tuesday: write ranges like 09:00-18:00 (not 'all day')."),
        ({"languages": "english!"}, "languages", "Not a language code: english!"),
        ({"temperature": "5"}, "temperature", "Ensure this value is less than or equal to 2.0."),
        ({"name": ""}, "name", "This field is required."),
    ],
)
def test_agent_settings_refuse_bad_input(
    tenant_a: Tenant, change: dict[str, str], field: str, message: str
) -> None:
    agent = agent_for(tenant_a.business)
    response = _owner_client(tenant_a).post(f"/app/{tenant_a.business.slug}/agent/", {**AGENT_FORM, **change})
    assert response.status_code == 400
    assert response.context["form"].errors[field] == [message]
    assert Agent.objects.get(pk=agent.pk).updated_at == agent.updated_at


@pytest.mark.parametrize(
    ("upload", "message"),
    [
        (SimpleUploadedFile("virus.exe", b"MZ..."), "This file type is not supported."),
        (SimpleUploadedFile("feed.csv", b""), "The submitted file is empty."),
    ],
)
def test_upload_refuses_bad_files_and_starts_nothing(
    tenant_a: Tenant, upload: SimpleUploadedFile, message: str
) -> None:
    imports = Import.objects.count()
    response = _owner_client(tenant_a).post(
        f"/app/{tenant_a.business.slug}/catalog/upload/",
        {"file": upload, "mode": "upsert"},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 400
    assert response.json()["errors"]["file"][0]["message"].startswith(message)
    assert Import.objects.count() == imports


def test_upload_refuses_a_bad_mode(tenant_a: Tenant) -> None:
    imports = Import.objects.count()
    response = _owner_client(tenant_a).post(
        f"/app/{tenant_a.business.slug}/catalog/upload/",
        {"file": SimpleUploadedFile("feed.csv", b"id,title\n1,x\n"), "mode": "everything"},
    )
    assert response.status_code == 400
    assert Import.objects.count() == imports


def test_staff_reply_must_have_text(tenant_a: Tenant) -> None:
    conversation_id = tenant_a.objects["conversation"]
    response = _owner_client(tenant_a).post(
        f"/app/{tenant_a.business.slug}/inbox/{conversation_id}/reply/", {"text": "   "}
    )
    assert response.status_code == 400
    assert response.context["reply_form"].errors["text"] == ["This field is required."]


def _wa(**change: str) -> dict[str, str]:
    form = {
        "whatsapp-kind": "whatsapp",
        "whatsapp-name": "Shop number",
        "whatsapp-waba_id": "102290129340398",
        "whatsapp-phone_number_id": "106540352242922",
        "whatsapp-display_phone_number": "+1 555 0100",
        "whatsapp-access_token": "EAAG-real-looking-token-9876",
        "whatsapp-app_secret": "",
        "whatsapp-verify_token": "a-verify-token-of-24-chars",
        "whatsapp-wa_template_name": "",
        "whatsapp-template_language": "en_US",
    }
    form.update({f"whatsapp-{k}": v for k, v in change.items()})
    return form


def test_whatsapp_connect_shows_the_verify_token_once_and_masks_the_token(
    tenant_a: Tenant, graph_api: Any
) -> None:
    graph_api.grant_waba(
        "EAAG-real-looking-token-9876", "102290129340398", {"106540352242922": "+1 555 0100"}
    )
    client = _owner_client(tenant_a)
    response = client.post(f"/app/{tenant_a.business.slug}/channels/whatsapp/connect/", _wa())
    assert response.status_code == 200
    html = response.content.decode()
    assert "a-verify-token-of-24-chars" in html
    assert response.context["connected"]["webhook_url"] == webhook_url("whatsapp")
    assert webhook_url("whatsapp").startswith("http://127.0.0.1:8000/")
    assert webhook_url("whatsapp") in html
    account = ChannelAccount.objects.get(business=tenant_a.business, phone_number_id="106540352242922")
    assert (account.kind, account.access_token, account.active, account.display_phone_number) == (
        "whatsapp",
        "EAAG-real-looking-token-9876",
        True,
        "15550100",
    )
    later = client.get(f"/app/{tenant_a.business.slug}/channels/").content.decode()
    assert "EAAG-real-looking-token-9876" not in later
    assert "a-verify-token-of-24-chars" not in later
    assert "••••9876" in later


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"phone_number_id": ""}, "phone_number_id", "Required for this channel."),
        ({"phone_number_id": "12ab"}, "phone_number_id", "Meta ids are numbers."),
        ({"access_token": ""}, "access_token", "This field is required."),
        (
            {"verify_token": "short"},
            "verify_token",
            "Ensure this value has at least 16 characters (it has 5).",
        ),
    ],
)
def test_channel_connect_refuses_bad_input(
    tenant_a: Tenant, change: dict[str, str], field: str, message: str
) -> None:
    before = ChannelAccount.objects.count()
    response = _owner_client(tenant_a).post(
        f"/app/{tenant_a.business.slug}/channels/whatsapp/connect/", _wa(**change)
    )
    assert response.status_code == 400
    form = next(p["form"] for p in response.context["panels"] if p["kind"] == "whatsapp")
    assert form.errors[field] == [message]
    assert ChannelAccount.objects.count() == before


def test_a_number_connected_to_another_business_is_refused(
    tenant_a: Tenant, tenant_b: Tenant, graph_api: Any
) -> None:
    taken = ChannelAccount.objects.get(business=tenant_b.business).phone_number_id
    # Even with a token Meta accepts for that number (both manage the WABA), it stays the other business's.
    graph_api.grant_waba("EAAG-real-looking-token-9876", "102290129340398", {taken: "15550100"})
    before = sorted(ChannelAccount.objects.values_list("pk", "business_id", "access_token"))
    response = _owner_client(tenant_a).post(
        f"/app/{tenant_a.business.slug}/channels/whatsapp/connect/", _wa(phone_number_id=taken)
    )
    assert response.status_code == 400
    form = next(p["form"] for p in response.context["panels"] if p["kind"] == "whatsapp")
    assert form.non_field_errors() == [
        "this WhatsApp number is already connected to another business; it must be disconnected there first"
    ]
    assert sorted(ChannelAccount.objects.values_list("pk", "business_id", "access_token")) == before


def test_channel_disconnect(tenant_a: Tenant) -> None:
    account_id = tenant_a.objects["channel_account"]
    response = _owner_client(tenant_a).post(
        f"/app/{tenant_a.business.slug}/channels/accounts/{account_id}/disconnect/"
    )
    assert response.status_code == 302
    account = ChannelAccount.objects.get(pk=account_id)
    assert (account.active, account.access_token) == (False, "")


def test_upload_over_the_size_limit_is_refused_with_the_import_services_reason(
    tenant_a: Tenant, settings: Any
) -> None:
    settings.CATALOG_MAX_UPLOAD_BYTES = 10
    imports = Import.objects.count()
    response = _owner_client(tenant_a).post(
        f"/app/{tenant_a.business.slug}/catalog/upload/",
        {"file": SimpleUploadedFile("feed.csv", b"id,title\n1,boot\n"), "mode": "upsert"},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 400
    assert (
        response.json()["errors"]["file"][0]["message"] == "the file is 16 bytes, over the limit of 10 bytes"
    )
    assert Import.objects.count() == imports


def test_a_second_business_needs_a_name(tenant_a: Tenant) -> None:
    client = _owner_client(tenant_a)
    businesses = Business.objects.count()
    assert client.post("/app/new/", {"name": "", "timezone": "UTC"}).status_code == 200
    assert Business.objects.count() == businesses
    response = client.post("/app/new/", {"name": "Second Shop", "timezone": "UTC"})
    assert response["Location"] == "/app/second-shop/"
    assert Membership.objects.get(business__slug="second-shop").user == tenant_a.owner
    # With two businesses, /app/ lets the person choose.
    assert [b.slug for b in client.get("/app/").context["businesses"]] == sorted(
        [tenant_a.business.slug, "second-shop"], key=lambda s: Business.objects.get(slug=s).name
    )
