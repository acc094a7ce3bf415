"""The admin in real headless Chromium against the real stack (uvicorn, a Celery worker, Redis, PostgreSQL,
the scriptable test inference server): sign-up to the first answer in the playground, an upload whose
progress bar reaches 100% with its error report, a takeover whose staff reply reaches an open widget, and the
analytics charts. Screenshots of every page go to artifacts/, and to docs/images/ (docs/admin.md shows them) when missing there or with UPDATE_DOCS_IMAGES=1.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from businesses.models import Business, Membership
from businesses.services import business_set_allowed_origins, business_set_demo_page
from catalogs.models import Import, Item
from dashboard.signup_tokens import signup_token
from messaging.models import Conversation, Message
from tests.dashboard.test_analytics import _dataset
from tests.dashboard.test_unanswered import _dataset as unanswered_dataset
from tests.factories import MembershipFactory
from tests.fixtures.browser import BrowserPage, publish_screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery"  # tests/factories.py
CATALOG = (
    "id,title,description,availability,price,link,image_link,brand,product_type\n"
    "TENT-2P,Ridgeline 2-person tent,Freestanding three-season backpacking tent.,in stock,249.00 EUR,"
    "https://shop.example/p/tent-2p,https://shop.example/img/tent-2p.jpg,Ridgeline,tents\n"
    "BOOT-W,Granite waterproof hiking boots,Leather boots with a waterproof membrane.,in stock,159.00 EUR,"
    "https://shop.example/p/boot-w,https://shop.example/img/boot-w.jpg,Granite,boots\n"
)
# The model's words after the answer composed from the row (docs/agent.md): they pass the answer's checks.
TENT_REPLY = "It is a great pick for two."
TENT_ANSWER = f"Ridgeline 2-person tent: 249.00 EUR, in stock. {TENT_REPLY}"


def shoot(bp: BrowserPage, artifacts_dir: Path, name: str, *, full_page: bool = True) -> None:
    path = artifacts_dir / f"admin-{name}.png"
    bp.page.screenshot(path=str(path), full_page=full_page)
    publish_screenshot(path)


def sign_in(bp: BrowserPage, base: str, email: str) -> None:
    bp.page.goto(f"{base}/accounts/login/")
    bp.page.fill("input[name=username]", email)
    bp.page.fill("input[name=password]", PASSWORD)
    bp.page.click("button[type=submit]")
    bp.page.wait_for_url(f"{base}/app/**")


def owner_of(**business_fields: Any) -> Membership:
    return MembershipFactory(
        role=Membership.Role.OWNER, **{f"business__{k}": v for k, v in business_fields.items()}
    )


def widget_wait_connected(bp: BrowserPage) -> None:
    bp.page.wait_for_function(
        "() => document.querySelector('bizagent-widget')?.dataset.connection === 'open'"
    )


def widget_ask(bp: BrowserPage, text: str) -> None:
    bp.page.locator("bizagent-widget textarea").fill(text)
    bp.page.keyboard.press("Enter")


def widget_wait_text(bp: BrowserPage, selector: str, text: str, timeout: float = 30) -> None:
    bp.page.wait_for_function(
        "([sel, text]) => { const r = document.querySelector('bizagent-widget')?.shadowRoot;"
        " return !!r && [...r.querySelectorAll(sel)].some(e => e.textContent.includes(text)); }",
        arg=[selector, text],
        timeout=timeout * 1000,
    )


def test_sign_up_to_the_first_answer_in_the_playground(
    stack: Any, new_page: Callable[..., BrowserPage], artifacts_dir: Path, import_catalog: Callable[..., Any]
) -> None:
    base = stack.asgi.url
    bp = new_page()
    bp.page.goto(f"{base}/")
    bp.page.wait_for_url(f"{base}/accounts/login/?next=/app/")
    shoot(bp, artifacts_dir, "login")
    bp.page.click("text=Create an account")
    bp.page.fill("input[name=email]", "owner@trailhead.example")
    bp.page.fill("input[name=business_name]", "Trailhead Outfitters")
    shoot(bp, artifacts_dir, "signup")
    bp.page.click("button[type=submit]")
    bp.page.wait_for_url(f"{base}/accounts/signup/sent/")
    assert "Check your email to continue" in bp.page.content()
    assert not Business.objects.exists()
    # The stack's worker mails the link to its console; the test makes the same signed link (same SECRET_KEY).
    token = signup_token(
        email="owner@trailhead.example", business_name="Trailhead Outfitters", timezone_name="UTC"
    )
    bp.page.goto(f"{base}/accounts/signup/confirm/{token}/")
    bp.page.fill("input[name=new_password1]", "a-long-unusual-passphrase-42")
    bp.page.fill("input[name=new_password2]", "a-long-unusual-passphrase-42")
    shoot(bp, artifacts_dir, "signup-confirm")
    bp.page.click("button[type=submit]")
    bp.page.wait_for_url(f"{base}/app/trailhead-outfitters/")
    assert bp.page.locator(".checklist li").count() == 5
    assert bp.page.locator(".checklist li.done").count() == 0
    business = Business.objects.get(slug="trailhead-outfitters")
    assert business.memberships.get().user.username == "owner@trailhead.example"

    import_catalog(business, CATALOG, embed=True)
    bp.page.goto(f"{base}/app/{business.slug}/agent/")
    bp.page.fill("textarea[name=instructions]", "You are the shop assistant of Trailhead Outfitters.")
    bp.page.click("#agent-form button[type=submit]")
    # The playground asks before it lets the widget connect from the admin's own address.
    bp.page.click("#playground-allow button")
    widget_wait_connected(bp)
    stack.inference.script(TENT_REPLY)
    widget_ask(bp, "Do you have a tent for two?")
    widget_wait_text(bp, ".msg.agent:not(.greeting):not(.streaming) .bubble", TENT_ANSWER)
    shoot(bp, artifacts_dir, "agent-playground", full_page=False)
    reply = Message.objects.get(business=business, role=Message.Role.AGENT)
    assert reply.text == TENT_ANSWER

    bp.page.goto(f"{base}/app/{business.slug}/")
    done = bp.page.locator(".checklist li.done").evaluate_all("els => els.map(e => e.dataset.step)")
    # Allowing the playground (the admin's own address) is not installing the widget on the shop's site.
    assert done == ["catalog", "agent", "try"]
    shoot(bp, artifacts_dir, "overview")
    assert bp.errors == []


def test_upload_shows_progress_to_100_and_the_error_report(
    stack: Any, new_page: Callable[..., BrowserPage], artifacts_dir: Path
) -> None:
    base = stack.asgi.url
    membership = owner_of(name="Granite Boots", slug="granite-boots")
    business = membership.business
    rows = [
        f"SKU-{n},Trail boot model {n},A sturdy boot number {n}.,in stock,{50 + n}.00 EUR,,,Granite,boots"
        for n in range(1, 301)
    ]
    rows.insert(10, "SKU-BAD,,A row without a title.,in stock,10.00 EUR,,,Granite,boots")
    rows.insert(20, "SKU-BAD2,Boot with a bad price,,in stock,ten euros,,,Granite,boots")
    csv_text = "id,title,description,availability,price,link,image_link,brand,product_type\n" + "\n".join(
        rows
    )

    bp = new_page()
    sign_in(bp, base, membership.user.username)
    bp.page.goto(f"{base}/app/{business.slug}/catalog/")
    shoot(bp, artifacts_dir, "catalog-empty")
    # Dropped on the drop zone, as a person drags it from their desktop (the drop starts the upload).
    bp.page.evaluate(
        """(text) => {
            const dt = new DataTransfer();
            dt.items.add(new File([text], "boots.csv", { type: "text/csv" }));
            document.getElementById("dropzone").dispatchEvent(
                new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
        }""",
        csv_text,
    )
    progress = bp.page.locator("#upload-progress")
    progress.wait_for(state="visible")
    bp.page.wait_for_function(
        "() => document.querySelector('#upload-progress [role=progressbar]').getAttribute('aria-valuenow') === '100'",
        timeout=120_000,
    )
    link = progress.locator("[data-field=errors-link]")
    link.wait_for(state="visible")
    assert progress.locator("[data-field=percent]").text_content() == "100%"
    assert "failed rows 2" in progress.locator("[data-field=summary]").text_content()
    # The page's counts and history follow without a reload.
    bp.page.locator("#import-history", has_text="boots.csv").wait_for()
    bp.page.wait_for_timeout(400)  # the bar's width transition
    shoot(bp, artifacts_dir, "catalog-upload")

    imp = Import.objects.get(business=business)
    assert (imp.state, imp.created_count, imp.failed_count) == ("succeeded", 300, 2)
    assert link.get_attribute("href") == f"/app/{business.slug}/catalog/imports/{imp.pk}/errors.csv"
    report = bp.page.request.get(f"{base}{link.get_attribute('href')}")
    assert report.status == 200
    lines = report.text().strip().splitlines()
    assert lines[0] == "row,column,reason"
    assert len(lines) == 3

    bp.page.goto(f"{base}/app/{business.slug}/catalog/")
    assert "boots.csv" in bp.page.locator("#import-history").text_content()
    bp.page.fill("#search-preview input[name=q]", "boot model 7")
    bp.page.click("#search-preview button")
    bp.page.locator("#search-hits").wait_for()
    shoot(bp, artifacts_dir, "catalog")
    bp.page.goto(f"{base}/app/{business.slug}/catalog/items/?q=model+12")
    assert (
        bp.page.locator("#items tbody tr").count()
        == Item.objects.filter(business=business, title__icontains="model 12").count()
    )
    shoot(bp, artifacts_dir, "catalog-items")
    bp.page.goto(f"{base}/app/{business.slug}/catalog/imports/{imp.pk}/")
    shoot(bp, artifacts_dir, "catalog-import")
    assert bp.errors == []


def test_takeover_and_a_staff_reply_reach_the_open_widget(
    stack: Any, new_page: Callable[..., BrowserPage], artifacts_dir: Path, import_catalog: Callable[..., Any]
) -> None:
    base = stack.asgi.url
    membership = owner_of(name="Ridgeline Tents", slug="ridgeline-tents")
    business = membership.business
    business_set_allowed_origins(business, origins=[base])
    business_set_demo_page(business, enabled=True)
    import_catalog(business, CATALOG, embed=True)

    customer = new_page()
    customer.page.goto(f"{base}/demo/{business.slug}/")
    customer.page.locator("bizagent-widget button.launcher").click()
    widget_wait_connected(customer)
    stack.inference.script(TENT_REPLY)
    widget_ask(customer, "Do you have a tent for two?")
    widget_wait_text(customer, ".msg.agent:not(.greeting):not(.streaming) .bubble", TENT_ANSWER)
    conversation = Conversation.objects.get(business=business)

    staff = new_page()
    sign_in(staff, base, membership.user.username)
    staff.page.goto(f"{base}/app/{business.slug}/inbox/")
    staff.page.click(f"[data-conversation='{conversation.pk}'] a")
    staff.page.locator("#thread .msg.agent", has_text=TENT_ANSWER).wait_for()
    assert "Ridgeline 2-person tent" in staff.page.locator("#thread .msg.agent .meta").text_content()
    staff.page.click("#take-over")
    staff.page.locator("#reply-form").wait_for()
    conversation.refresh_from_db()
    assert conversation.state == "human"

    # While staff have it, a customer message gets no agent reply, and it appears in the inbox by itself.
    calls = stack.inference.chat_requests
    widget_ask(customer, "Can I pick it up today?")
    staff.page.locator("#thread .msg.customer", has_text="Can I pick it up today?").wait_for(timeout=15_000)
    staff.page.fill("#reply-form textarea", "Yes, we're open until 6pm. I've set one aside for you.")
    staff.page.click("#reply-form button[type=submit]")
    widget_wait_text(customer, ".msg .bubble", "I've set one aside for you.")
    shoot(staff, artifacts_dir, "inbox")
    shoot(customer, artifacts_dir, "widget-staff-reply", full_page=False)
    assert stack.inference.chat_requests == calls
    assert Message.objects.filter(conversation=conversation, role=Message.Role.AGENT).count() == 1
    assert Message.objects.get(conversation=conversation, role=Message.Role.STAFF).text == (
        "Yes, we're open until 6pm. I've set one aside for you."
    )

    staff.page.click("#hand-back")
    staff.page.locator("#take-over").wait_for()
    conversation.refresh_from_db()
    assert conversation.state == "bot"
    assert customer.errors == [] and staff.errors == []


def test_analytics_page_renders_its_charts(
    stack: Any, new_page: Callable[..., BrowserPage], artifacts_dir: Path
) -> None:
    base = stack.asgi.url
    membership = owner_of(name="Summit Gear", slug="summit-gear")
    _dataset(membership.business)
    bp = new_page()
    sign_in(bp, base, membership.user.username)
    bp.page.goto(f"{base}/app/{membership.business.slug}/analytics/?days=7")
    charts = bp.page.locator("svg.chart")
    assert charts.count() == 5
    for i in range(5):
        box = charts.nth(i).bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 20
    assert bp.page.locator("svg[data-chart=bar] rect.bar").count() == 14  # 7 days x 2 series
    assert bp.page.locator("#kpi-alone").text_content() == "50%"
    shoot(bp, artifacts_dir, "analytics")
    unanswered_dataset(membership.business)
    bp.page.goto(f"{base}/app/{membership.business.slug}/unanswered/")
    # With the analytics' rows: a thumbs-down on "how much is the boot?" and "where is my order?", a handoff.
    assert bp.page.locator(".unanswered-group h2").all_text_contents() == [
        "3\u00d7 Is shipping to Canada possible?",
        "2\u00d7 When are you open on Sunday?",
        "1\u00d7 What is your return policy?",
        "1\u00d7 where is my order?",
        "1\u00d7 I want a refund",
        "1\u00d7 how much is the boot?",
    ]
    shoot(bp, artifacts_dir, "unanswered")
    for page in ("install", "api-keys", "channels"):
        bp.page.goto(f"{base}/app/{membership.business.slug}/{page}/")
        if page == "channels":
            bp.page.click("#channel-whatsapp summary")
        shoot(bp, artifacts_dir, page)
    assert bp.errors == []
