"""The widget in real headless Chromium against the real stack: uvicorn (ASGI), a Celery worker, Redis,
PostgreSQL and the scriptable test inference server (tests/fixtures/stack.py, tests/fixtures/browser.py).

Everything the visitor does goes through the page: clicks, keys, reloads. The assertions read the widget's
shadow DOM, the page's own signals (dialogs, page errors) and the database.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from agents.disclosure import DEFAULT_DISCLOSURES
from agents.services import agent_update
from businesses.demo import DEMO_SLUG
from businesses.models import Business
from businesses.services import business_set_allowed_origins
from messaging.models import Contact, Conversation, Message, MessageMedia
from messaging.services import conversation_close, conversation_handoff, staff_reply_send
from tests.factories import BusinessFactory
from tests.fixtures.browser import BrowserPage, publish_screenshot
from tests.fixtures.uploads import stack_media_path

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


# Our own small catalog in the demo business (the demo catalog may change; these tests need exact items).
CATALOG = (
    "id,title,description,availability,price,link,image_link,brand,product_type\n"
    "TENT-2P,Ridgeline 2-person tent,Freestanding three-season backpacking tent with two doors.,in stock,"
    "249.00 EUR,https://shop.example/p/tent-2p,{base}/static/demo/tent.svg,Ridgeline,tents\n"
    "BOOT-W,Granite waterproof hiking boots,Leather hiking boots with a waterproof membrane.,in stock,"
    "159.00 EUR,https://shop.example/p/boot-w,{base}/static/demo/boot.svg,Granite,boots\n"
    'LAMP-X,"&lt;script&gt;alert(&quot;catalog&quot;)&lt;/script&gt; Lumen camp lantern",'
    "Rechargeable camp lantern with 300 lumens.,out of stock,34.90 EUR,"
    "https://shop.example/p/lamp-x,https://shop.example/img/lamp-x.jpg,Lumen,lanterns\n"
)
# What the model adds to the answer composed from the row: every sentence passes the answer's checks.
TENT_REPLY = (
    "Yes! It is a **great pick** for two.\n\n"
    "- Freestanding, three seasons\n- Two doors\n\nSee [the product page](https://shop.example/p/tent-2p)."
)
TENT_FACTS = "Ridgeline 2-person tent: 249.00 EUR, in stock."


@pytest.fixture
def demo_shop(stack: Any, import_catalog: Callable[..., Any]) -> Business:
    """The demo business (``manage.py seed_demo``, as the stack runs it, with the demo catalog), allowed on the
    test server's origin, plus the catalog above."""
    call_command("seed_demo", stdout=open(os.devnull, "w"))  # noqa: SIM115
    business = Business.objects.get(slug=DEMO_SLUG)
    business_set_allowed_origins(business, origins=[stack.asgi.url])
    import_catalog(business, CATALOG.replace("{base}", stack.asgi.url), embed=True)
    return business


@pytest.fixture
def shop(stack: Any, import_catalog: Callable[..., Any]) -> Business:
    """A small business with only the catalog above (its storefront is the same demo page template)."""
    business = BusinessFactory(
        name="Ridge Shop", slug="ridge-shop", allowed_origins=[stack.asgi.url], demo_page_enabled=True
    )
    import_catalog(business, CATALOG.replace("{base}", stack.asgi.url), embed=True)
    return business


def demo_url(stack: Any, business: Business) -> str:
    return f"{stack.asgi.url}/demo/{business.slug}/"


def open_widget(bp: BrowserPage, url: str) -> None:
    bp.page.goto(url)
    bp.page.locator("bizagent-widget button.launcher").click()
    bp.page.locator("bizagent-widget textarea").wait_for(state="visible")
    wait_connected(bp)


def wait_connected(bp: BrowserPage, timeout: float = 15) -> None:
    bp.page.wait_for_function(
        "() => document.querySelector('bizagent-widget')?.dataset.connection === 'open'",
        timeout=timeout * 1000,
    )


def ask(bp: BrowserPage, text: str) -> None:
    bp.page.locator("bizagent-widget textarea").fill(text)
    bp.page.keyboard.press("Enter")


def agent_texts(bp: BrowserPage) -> list[str]:
    return bp.shadow_eval(
        "return [...root.querySelectorAll('.msg.agent:not(.greeting) .bubble')].map(b => b.textContent)"
    )


def wait_done(bp: BrowserPage, count: int = 1, timeout: float = 30) -> None:
    bp.page.wait_for_function(
        "(n) => { const w = document.querySelector('bizagent-widget'), r = w.shadowRoot;"
        " return r.querySelectorAll('.msg.agent:not(.greeting)').length >= n && w.state.streamingId == null"
        " && !w.state.awaiting && !r.querySelector('.msg.streaming'); }",
        arg=count,
        timeout=timeout * 1000,
    )


def assert_clean(bp: BrowserPage) -> None:
    assert bp.dialogs == []
    assert bp.errors == []


def test_demo_page_streams_an_answer_and_shows_the_product_card(
    stack: Any, demo_shop: Business, new_page: Callable[..., BrowserPage], artifacts_dir: Path
) -> None:
    shop = demo_shop
    stack.inference.script(TENT_REPLY)
    stack.inference.token_delay = 0.08
    bp = new_page()
    bp.page.goto(demo_url(stack, shop))
    # The storefront lists the business's real catalog.
    assert bp.page.locator(".product").count() == 24
    bp.page.locator("bizagent-widget button.launcher").click()
    wait_connected(bp)
    assert (
        bp.shadow_eval("return root.querySelector('.greeting').textContent")
        == "Hi! How can I help you today?"
    )
    assert bp.shadow_eval("return root.activeElement && root.activeElement.id") == "bizagent-input"

    ask(bp, "Do you have a 2-person tent?")
    # The typing indicator shows until the first words arrive.
    bp.page.wait_for_function(
        "() => !document.querySelector('bizagent-widget').shadowRoot.querySelector('.typing').hidden"
    )
    # Watch the reply grow: every snapshot is a prefix of the final text, and there are several.
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = bp.shadow_eval(
            "const m = root.querySelector('.msg.agent:not(.greeting)');"
            " return m ? [m.classList.contains('streaming'), m.querySelector('.bubble').textContent] : null"
        )
        if state and state[1] and (not seen or seen[-1] != state[1]):
            seen.append(state[1])
        if state and not state[0] and state[1]:
            break
        time.sleep(0.03)
    wait_done(bp)
    final = agent_texts(bp)[-1]
    # The answer from the row first, then the model's words (each sentence shown once it passed its checks).
    assert final == (
        "Ridgeline 2-person tent: 249.00 EUR, in stock. Yes! It is a great pick for two."
        "Freestanding, three seasonsTwo doorsSee the product page."
    )
    partials = [s for s in seen if s != final]
    assert len(partials) >= 3, seen
    assert len({len(s) for s in partials}) == len(partials)  # it grew each time

    # Markdown subset: bold, a list, a safe link.
    assert bp.shadow_eval("return root.querySelector('.msg.agent:not(.greeting) strong').textContent") == (
        "great pick"
    )
    assert bp.shadow_eval("return root.querySelectorAll('.msg.agent:not(.greeting) li').length") == 2
    link = bp.shadow_eval(
        "const a = root.querySelector('.msg.agent:not(.greeting) .bubble a'); return [a.href, a.target, a.rel]"
    )
    assert link == ["https://shop.example/p/tent-2p", "_blank", "noopener noreferrer nofollow ugc"]
    # The conversation's first reply says, above its bubble, that an automated assistant answers.
    assert (
        bp.shadow_eval("return root.querySelector('.msg.agent:not(.greeting) .disclosure').textContent")
        == DEFAULT_DISCLOSURES["en"]
    )

    # The product card: title, price, availability, link, image.
    card = bp.shadow_eval(
        "const c = root.querySelector('.card'); return c && [c.querySelector('.ct').textContent,"
        " c.querySelector('.cp').textContent, c.querySelector('.ca').textContent, c.href,"
        " c.querySelector('img').getAttribute('src')]"
    )
    assert card == [
        "Ridgeline 2-person tent",
        "\u20ac249.00",
        "In stock",
        "https://shop.example/p/tent-2p",
        f"{stack.asgi.url}/static/demo/tent.svg",
    ]
    # Stored as the server sees it.
    reply = Message.objects.get(business=shop, role=Message.Role.AGENT)
    assert reply.status == Message.Status.DONE
    assert [c["external_id"] for c in reply.cards] == ["TENT-2P"]
    assert_clean(bp)
    bp.page.screenshot(path=str(artifacts_dir / "widget-desktop.png"))
    publish_screenshot(artifacts_dir / "widget-desktop.png")


# A long reply for the streaming tests: the model's sentences after the tent's answer, one delta each.
SLOW_SENTENCES = " ".join(["Camping is more fun with good gear."] * 8)
SLOW_REPLY = f"{TENT_FACTS} {SLOW_SENTENCES}"
LONG_QUESTION = "Tell me all about the tent"


def streaming_text(bp: BrowserPage) -> str | None:
    return bp.shadow_eval(
        "const m = root.querySelector('.msg.streaming .bubble'); return m ? m.textContent : null"
    )


def test_reload_keeps_the_history_and_a_streaming_reply_continues(
    stack: Any, shop: Business, new_page: Callable[..., BrowserPage]
) -> None:
    stack.inference.script(SLOW_SENTENCES)
    stack.inference.token_delay = 0.1  # 57 tokens: about 6 s of streaming
    bp = new_page()
    open_widget(bp, demo_url(stack, shop))
    ask(bp, LONG_QUESTION)
    bp.page.wait_for_function(
        "() => (document.querySelector('bizagent-widget').shadowRoot"
        ".querySelector('.msg.streaming .bubble')?.textContent || '').length > 60"
    )
    before = streaming_text(bp)
    assert before is not None and SLOW_REPLY.startswith(before)
    bp.page.reload()
    # The panel reopens by itself (per tab), the question is there, and the same reply goes on streaming.
    wait_connected(bp)
    assert bp.shadow_eval("return root.querySelector('.panel').hidden") is False
    customer = bp.shadow_eval(
        "return [...root.querySelectorAll('.msg.customer .bubble')].map(b => b.textContent)"
    )
    assert customer == [LONG_QUESTION]
    bp.page.wait_for_function(
        "(n) => (document.querySelector('bizagent-widget').shadowRoot"
        ".querySelector('.msg.streaming .bubble')?.textContent || '').length > n",
        arg=len(before),
    )
    wait_done(bp)
    # Exactly the reply: nothing repeated or lost across the reload.
    assert agent_texts(bp) == [SLOW_REPLY]
    assert Message.objects.filter(business=shop, role=Message.Role.AGENT).get().text == SLOW_REPLY
    # A new tab shows the same conversation.
    tab = bp.context.new_page()
    tab.goto(demo_url(stack, shop))
    tab.locator("bizagent-widget button.launcher").click()
    tab.wait_for_function(
        "() => document.querySelector('bizagent-widget').shadowRoot.querySelectorAll('.msg[data-id]').length == 2"
    )
    texts = tab.evaluate(
        "() => [...document.querySelector('bizagent-widget').shadowRoot.querySelectorAll('.msg[data-id] .bubble')]"
        ".map(b => b.textContent)"
    )
    assert texts == [LONG_QUESTION, SLOW_REPLY]
    assert Conversation.objects.filter(business=shop).count() == 1
    assert_clean(bp)


def test_a_dropped_connection_reconnects_and_resumes_the_stream(
    stack: Any, shop: Business, new_page: Callable[..., BrowserPage]
) -> None:
    stack.inference.script(SLOW_SENTENCES)
    stack.inference.token_delay = 0.1
    bp = new_page()
    sockets = watch_sockets(bp)
    open_widget(bp, demo_url(stack, shop))
    ask(bp, LONG_QUESTION)
    bp.page.wait_for_function(
        "() => (document.querySelector('bizagent-widget').shadowRoot"
        ".querySelector('.msg.streaming .bubble')?.textContent || '').length > 60"
    )
    # The network drops the socket mid-reply (closed under the widget, which did not ask for it).
    bp.shadow_eval("host.ws.close(); return true")
    wait_done(bp)
    assert agent_texts(bp) == [SLOW_REPLY]
    assert len(sockets) == 2
    hello = [json.loads(f) for f in sockets[1].sent if '"hello"' in f]
    assert len(hello) == 1
    reply_id = Message.objects.get(business=shop, role=Message.Role.AGENT).pk
    # The resume point: the last seq the widget had of the reply that was streaming.
    assert list(hello[0]["last_seq"]) == [str(reply_id)]
    assert hello[0]["last_seq"][str(reply_id)] >= 1
    assert hello[0]["conversation_id"] == Conversation.objects.get(business=shop).pk
    assert_clean(bp)


@dataclass
class SocketLog:
    url: str
    sent: list[str] = field(default_factory=list)
    received: list[str] = field(default_factory=list)


def watch_sockets(bp: BrowserPage) -> list[SocketLog]:
    """Every websocket the page opens from now on, with the frames it sent and received."""
    logs: list[SocketLog] = []

    def opened(ws: Any) -> None:
        log = SocketLog(url=ws.url)
        logs.append(log)
        ws.on("framesent", lambda payload: log.sent.append(payload))
        ws.on("framereceived", lambda payload: log.received.append(payload))

    bp.page.on("websocket", opened)
    return logs


def test_markup_from_the_model_and_the_catalog_renders_as_text(
    stack: Any, shop: Business, new_page: Callable[..., BrowserPage]
) -> None:
    title = '<script>alert("catalog")</script> Lumen camp lantern'
    assert shop.items.get(external_id="LAMP-X").title == title
    model = "<img src=x onerror=alert('reply')> [x](javascript:alert('link'))"
    stack.inference.script(model)
    # The answer from the row (its title is the catalog's markup, as text), then the model's markup, as text.
    reply = f"{title}: 34.90 EUR, out of stock. {model}"
    bp = new_page()
    open_widget(bp, demo_url(stack, shop))
    ask(bp, "Do you sell a camp lantern? <b>bold</b><img src=y onerror=alert('customer')>")
    wait_done(bp)
    # (A javascript: link is not even parsed as a link: it stays the characters it was.)
    assert agent_texts(bp) == [reply]
    # The customer's own markup is text too.
    assert bp.shadow_eval("return root.querySelector('.msg.customer .bubble').textContent") == (
        "Do you sell a camp lantern? <b>bold</b><img src=y onerror=alert('customer')>"
    )
    # Nothing became an element: no <img>/<script>/<b> in any bubble, the javascript: link is plain text.
    assert (
        bp.shadow_eval(
            "return root.querySelectorAll('.bubble img, .bubble script, .bubble b, script').length"
        )
        == 0
    )
    assert bp.shadow_eval("return root.querySelectorAll('.bubble a').length") == 0
    card_title = bp.shadow_eval("const t = root.querySelector('.card .ct'); return t && t.textContent")
    assert card_title == title
    assert bp.shadow_eval("return root.querySelectorAll('.card script').length") == 0
    bp.page.wait_for_timeout(300)  # an onerror handler would have fired by now
    assert bp.dialogs == []
    assert bp.errors == []


def test_a_page_on_a_non_allowed_origin_cannot_connect(
    stack: Any, shop: Business, new_page: Callable[..., BrowserPage], static_origin: Callable[[str], str]
) -> None:
    url = static_origin(
        "<!doctype html><title>Copycat</title><p>Someone else's site</p>"
        f'<script src="{stack.asgi.url}/widget.js" data-agent="{shop.widget_key}" async></script>'
    )
    bp = new_page()
    sockets = watch_sockets(bp)
    bp.page.goto(url)
    bp.page.locator("bizagent-widget button.launcher").click()
    bp.page.wait_for_function(
        "() => document.querySelector('bizagent-widget').dataset.connection === 'refused'"
    )
    assert bp.shadow_eval("return root.querySelector('.banner').textContent") == (
        "This chat isn't available on this website."
    )
    # The widget tried once (no retry loop), and the server answered only with its refusal.
    bp.page.wait_for_timeout(1500)
    assert len(sockets) == 1
    assert [json.loads(f)["code"] for f in sockets[0].received] == ["origin_not_allowed"]
    # A hand-written socket from the page gets the same: refused, closed with 4403, never "ready".
    result = bp.page.evaluate(
        """(url) => new Promise((done) => {
            const ws = new WebSocket(url); const frames = [];
            ws.onopen = () => ws.send(JSON.stringify({type: "hello", visitor_token: null}));
            ws.onmessage = (e) => frames.push(JSON.parse(e.data).type);
            ws.onclose = (e) => done({code: e.code, frames});
        })""",
        stack.chat_url(shop),
    )
    assert result == {"code": 4403, "frames": ["error"]}
    # Nothing was stored for either attempt.
    assert Contact.objects.count() == 0
    assert Conversation.objects.count() == 0
    assert Message.objects.count() == 0
    assert stack.inference.chat_requests == 0


MEASURE = """
const r = (el) => { const b = el.getBoundingClientRect(); return [b.x, b.y, b.width, b.height].map(Math.round); };
const s = (el, ...props) => props.map((p) => getComputedStyle(el)[p]);
return {
  launcher: r(root.querySelector('.launcher')),
  panel: r(root.querySelector('.panel')),
  header: r(root.querySelector('header')),
  title: s(root.querySelector('h2'), 'fontSize', 'fontFamily', 'fontWeight', 'color', 'lineHeight'),
  input: r(root.querySelector('textarea')),
  greeting: r(root.querySelector('.greeting .bubble')),
  greetingText: s(root.querySelector('.greeting .bubble'), 'fontSize', 'lineHeight', 'color', 'fontFamily',
    'letterSpacing', 'textTransform', 'padding'),
  send: r(root.querySelector('.send')),
};
"""


def test_the_host_pages_aggressive_css_does_not_change_the_widget(
    stack: Any, shop: Business, new_page: Callable[..., BrowserPage], static_origin: Callable[[str], str]
) -> None:
    script = f'<script src="{stack.asgi.url}/widget.js" data-agent="{shop.widget_key}" async></script>'
    plain = static_origin(f"<!doctype html><title>Plain</title><p>Plain page</p>{script}")
    hostile = static_origin(
        "<!doctype html><title>Hostile</title><style>"
        "* { all: unset !important; } html { font-size: 40px; } "
        "body { font: 900 3em/5 'Comic Sans MS', cursive; color: red; letter-spacing: 4px; "
        "text-transform: uppercase; direction: rtl; } "
        "div, button, textarea, header, h2 { display: inline !important; padding: 50px !important; } "
        "bizagent-widget { position: absolute; width: 10px; zoom: 1; }"
        f"</style><p>Hostile page</p>{script}"
    )
    business_set_allowed_origins(shop, origins=[stack.asgi.url, plain.rstrip("/"), hostile.rstrip("/")])
    sizes = []
    for url in (plain, hostile):
        bp = new_page()
        bp.page.goto(url)
        bp.page.locator("bizagent-widget button.launcher").click()
        wait_connected(bp)
        bp.page.wait_for_function(
            "() => !document.querySelector('bizagent-widget').shadowRoot.querySelector('.greeting').hidden"
        )
        bp.page.mouse.move(600, 10)  # off the launcher: its hover zoom is not part of the comparison
        bp.page.wait_for_timeout(400)
        sizes.append(bp.shadow_eval(MEASURE))
        assert_clean(bp)
    assert sizes[0] == sizes[1]
    assert sizes[0]["title"][0] == "16px"
    assert sizes[0]["greetingText"][0] == "15px"


def test_keyboard_only_use_and_right_to_left_text(
    stack: Any, shop: Business, new_page: Callable[..., BrowserPage], static_origin: Callable[[str], str]
) -> None:
    # The catalog is English: an Arabic question finds nothing, and the shop's own (Arabic) message answers.
    arabic_not_found = "\u0646\u0639\u0645\u060c \u0644\u062f\u064a\u0646\u0627 \u062e\u064a\u0645\u0629."
    agent_update(shop, no_results_message=arabic_not_found)
    url = static_origin(
        "<!doctype html><title>Keys</title><button id=page-button>A page button</button>"
        f'<script src="{stack.asgi.url}/widget.js" data-agent="{shop.widget_key}" async></script>'
    )
    business_set_allowed_origins(shop, origins=[url.rstrip("/")])
    bp = new_page()
    page = bp.page
    page.goto(url)
    page.wait_for_selector("bizagent-widget", state="attached")
    focused = "return root.activeElement ? root.activeElement.className || root.activeElement.tagName : null"
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "page-button"
    page.keyboard.press("Tab")
    assert bp.shadow_eval(focused) == "launcher"
    page.keyboard.press("Enter")
    wait_connected(bp)
    assert bp.shadow_eval("return root.activeElement.id") == "bizagent-input"
    assert bp.shadow_eval("return root.querySelector('.launcher').getAttribute('aria-expanded')") == "true"
    page.keyboard.type("\u0647\u0644 \u0644\u062f\u064a\u0643\u0645 \u062e\u064a\u0645\u0629\u061f")
    page.keyboard.press("Enter")
    wait_done(bp)
    # Right-to-left text lays out right to left in both bubbles (dir=auto).
    directions = bp.shadow_eval(
        "return [...root.querySelectorAll('.msg[data-id] .bubble')].map(b => getComputedStyle(b).direction)"
    )
    assert directions == ["rtl", "rtl"]
    # The announcement for screen readers carries the finished reply once.
    page.wait_for_timeout(100)
    assert bp.shadow_eval("return root.querySelector('[aria-live=polite]').textContent") == (
        f"Assistant: {arabic_not_found}"
    )
    # Tab reaches the send button; Escape closes and gives focus back to the launcher.
    page.keyboard.press("Tab")
    assert bp.shadow_eval(focused) == "icon send"
    page.keyboard.press("Escape")
    assert bp.shadow_eval("return root.querySelector('.panel').hidden") is True
    assert bp.shadow_eval(focused) == "launcher"
    assert bp.shadow_eval("return root.querySelector('.launcher').getAttribute('aria-expanded')") == "false"
    # Space on the launcher opens it again.
    page.keyboard.press("Space")
    assert bp.shadow_eval("return root.activeElement.id") == "bizagent-input"
    assert_clean(bp)


def test_a_narrow_screen_gets_a_full_screen_panel(
    stack: Any, shop: Business, new_page: Callable[..., BrowserPage], artifacts_dir: Path
) -> None:
    stack.inference.script(TENT_REPLY)
    bp = new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    open_widget(bp, demo_url(stack, shop))
    panel = bp.shadow_eval(
        "const b = root.querySelector('.panel').getBoundingClientRect(); return [b.x, b.y, b.width, b.height]"
    )
    assert panel == [0, 0, 390, 844]
    assert bp.shadow_eval("return getComputedStyle(root.querySelector('.launcher')).display") == "none"
    # 16px or more: iOS does not zoom into the input.
    assert bp.shadow_eval("return getComputedStyle(root.querySelector('textarea')).fontSize") == "16px"
    ask(bp, "Do you have a 2-person tent?")
    wait_done(bp)
    bp.page.wait_for_function(
        "() => document.querySelector('bizagent-widget').shadowRoot.querySelector('.card img')?.complete"
    )
    assert_clean(bp)
    bp.page.screenshot(path=str(artifacts_dir / "widget-mobile.png"))
    publish_screenshot(artifacts_dir / "widget-mobile.png")


def test_stop_cuts_the_reply_upstream(
    stack: Any, shop: Business, new_page: Callable[..., BrowserPage]
) -> None:
    stack.inference.script(SLOW_SENTENCES)
    stack.inference.token_delay = 0.15
    bp = new_page()
    open_widget(bp, demo_url(stack, shop))
    ask(bp, LONG_QUESTION)
    bp.page.wait_for_function(
        "() => (document.querySelector('bizagent-widget').shadowRoot"
        ".querySelector('.msg.streaming .bubble')?.textContent || '').length > 60"
    )
    send = bp.page.locator("bizagent-widget button.send")
    assert send.get_attribute("aria-label") == "Stop the reply"
    send.click()
    wait_done(bp)
    assert bp.shadow_eval("return root.querySelector('.msg.agent:not(.greeting) .meta').textContent") == (
        "The reply was stopped before it finished."
    )
    assert send.get_attribute("aria-label") == "Send"
    reply = Message.objects.get(business=shop, role=Message.Role.AGENT)
    assert reply.status == Message.Status.CUT
    assert SLOW_REPLY.startswith(reply.text) and len(reply.text) < len(SLOW_REPLY)
    assert agent_texts(bp) == [reply.text.strip()]
    assert stack.inference.wait_for(lambda: stack.inference.active_streams == 0)
    assert_clean(bp)


def test_a_model_that_refuses_leaves_the_answer_from_the_catalog(
    stack: Any, shop: Business, new_page: Callable[..., BrowserPage]
) -> None:
    # A 400 is the server refusing this request: no retry, no circuit opened, and no apology either: the
    # customer still gets the catalog's answer.
    stack.inference.fault("status", status=400)
    bp = new_page()
    open_widget(bp, demo_url(stack, shop))
    ask(bp, "Do you have a 2-person tent?")
    wait_done(bp)
    assert agent_texts(bp) == [TENT_FACTS]
    assert bp.shadow_eval("return root.querySelectorAll('.msg.agent .meta.err').length") == 0
    reply = Message.objects.get(business=shop, role=Message.Role.AGENT)
    assert (reply.status, reply.text) == (Message.Status.DONE, TENT_FACTS)
    assert "RequestRejected" in reply.grounding["model_error"]
    assert_clean(bp)


def test_theme_from_agent_settings_and_the_js_api(
    stack: Any, shop: Business, new_page: Callable[..., BrowserPage]
) -> None:
    agent_update(
        shop,
        name="Ridge Guide",
        greeting="Welcome to **Ridge Shop**!",
        theme_color="#fbbf24",
        theme_position="left",
        theme_title="Ask Ridge",
        theme_dark_mode="dark",
    )
    stack.inference.script("Hello there.")
    bp = new_page()
    bp.page.goto(demo_url(stack, shop))
    bp.page.wait_for_function("() => window.BizAgent && window.BizAgent.version === '1'")
    bp.page.evaluate(
        "() => { window.got = []; BizAgent.on('message', (m) => window.got.push([m.role, m.text]));"
        " BizAgent.identify({name: 'Ada', email: 'ada@example.com'}); BizAgent.open(); }"
    )
    wait_connected(bp)
    theme = bp.shadow_eval(
        "const l = root.querySelector('.launcher'), h = root.querySelector('header');"
        " return {launcherBg: getComputedStyle(l).backgroundColor, headerFg: getComputedStyle(h).color,"
        " left: Math.round(l.getBoundingClientRect().left), title: root.querySelector('h2').textContent,"
        " greeting: root.querySelector('.greeting').textContent, scheme: host.dataset.scheme,"
        " panelBg: getComputedStyle(root.querySelector('.panel')).backgroundColor}"
    )
    assert theme == {
        "launcherBg": "rgb(251, 191, 36)",
        "headerFg": "rgb(17, 20, 24)",  # dark text on a light accent: the higher contrast
        "left": 20,
        "title": "Ask Ridge",
        "greeting": "Welcome to Ridge Shop!",
        "scheme": "dark",
        "panelBg": "rgb(28, 31, 36)",
    }
    ask(bp, "Hi")
    wait_done(bp)
    assert bp.page.evaluate("() => window.got") == [["customer", "Hi"], ["agent", "Hello there."]]
    bp.page.evaluate("() => BizAgent.toggle()")
    assert bp.shadow_eval("return root.querySelector('.panel').hidden") is True
    bp.page.evaluate("() => BizAgent.toggle()")
    assert bp.shadow_eval("return root.querySelector('.panel').hidden") is False
    bp.page.evaluate("() => BizAgent.close()")
    assert bp.shadow_eval("return root.querySelector('.panel').hidden") is True
    # The page's own CSS variables override the theme.
    bp.page.add_style_tag(content="bizagent-widget { --bizagent-accent: #123456; }")
    assert bp.shadow_eval("return getComputedStyle(root.querySelector('.launcher')).backgroundColor") == (
        "rgb(18, 52, 86)"
    )
    stored = bp.page.evaluate(f"() => JSON.parse(localStorage.getItem('bizagent:{shop.widget_key}'))")
    assert stored["contact"] == {"name": "Ada", "email": "ada@example.com"}
    assert stored["conversation_id"] == Conversation.objects.get(business=shop).pk
    assert_clean(bp)


def test_the_server_going_away_mid_reply_is_survived_with_back_off_and_resume(
    stack: Any, shop: Business, new_page: Callable[..., BrowserPage]
) -> None:
    stack.inference.script(SLOW_SENTENCES)
    stack.inference.token_delay = 0.2  # about 11 s of streaming: it outlasts the outage
    bp = new_page()
    sockets = watch_sockets(bp)
    open_widget(bp, demo_url(stack, shop))
    ask(bp, LONG_QUESTION)
    bp.page.wait_for_function(
        "() => (document.querySelector('bizagent-widget').shadowRoot"
        ".querySelector('.msg.streaming .bubble')?.textContent || '').length > 60"
    )
    # The ASGI server dies (every socket to it is gone); the worker keeps streaming into the log meanwhile.
    stack.asgi.stop()
    bp.page.wait_for_function("() => document.querySelector('bizagent-widget').dataset.connection !== 'open'")
    assert bp.shadow_eval("return root.querySelector('header .st').textContent") == "Reconnecting\u2026"
    stack.asgi.start()
    stack.asgi.wait_ready()
    wait_connected(bp, timeout=30)
    wait_done(bp, timeout=30)
    assert agent_texts(bp) == [SLOW_REPLY]
    assert len(sockets) >= 2
    assert Message.objects.filter(business=shop).count() == 2
    assert bp.dialogs == []
    assert bp.errors == []


def test_data_attributes_override_the_settings(
    stack: Any, shop: Business, new_page: Callable[..., BrowserPage], static_origin: Callable[[str], str]
) -> None:
    url = static_origin(
        "<!doctype html><title>Attrs</title><button onclick='BizAgent.open()'>Chat with us</button>"
        f'<script src="{stack.asgi.url}/widget.js" data-agent="{shop.widget_key}" data-launcher="false"'
        ' data-title="Help desk" data-color="#7c3aed" data-position="left" data-placeholder="Ask away" async>'
        "</script>"
    )
    business_set_allowed_origins(shop, origins=[url.rstrip("/")])
    bp = new_page()
    bp.page.goto(url)
    bp.page.wait_for_function("() => !!window.BizAgent")
    bp.page.wait_for_timeout(300)  # the public config has been applied
    assert bp.shadow_eval("return getComputedStyle(root.querySelector('.launcher')).display") == "none"
    bp.page.get_by_role("button", name="Chat with us").click()
    wait_connected(bp)
    got = bp.shadow_eval(
        "const p = root.querySelector('.panel').getBoundingClientRect();"
        " return {title: root.querySelector('h2').textContent,"
        " header: getComputedStyle(root.querySelector('header')).backgroundColor,"
        " headerText: getComputedStyle(root.querySelector('header')).color,"
        " left: Math.round(p.left), placeholder: root.querySelector('textarea').placeholder}"
    )
    assert got == {
        "title": "Help desk",
        "header": "rgb(124, 58, 237)",
        "headerText": "rgb(255, 255, 255)",
        "left": 20,
        "placeholder": "Ask away",
    }
    assert_clean(bp)


def in_thread(fn: Callable[[], Any]) -> Any:
    """Run a service that sends to the channel layer (async_to_sync) off Playwright's event-loop thread."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(fn())
        finally:
            connection.close()  # this thread's own database connection

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(30)
    return result[0]


def test_a_person_takes_over_and_their_reply_raises_the_unread_badge(
    stack: Any, shop: Business, new_page: Callable[..., BrowserPage]
) -> None:
    stack.inference.script("Let me check that for you.")
    bp = new_page()
    open_widget(bp, demo_url(stack, shop))
    ask(bp, "Can I return worn boots?")
    wait_done(bp)
    conversation = Conversation.objects.get(business=shop)
    in_thread(lambda: conversation_handoff(business=shop, conversation_id=conversation.pk, reason="returns"))
    bp.page.wait_for_function(
        "() => document.querySelector('bizagent-widget').shadowRoot.querySelector('.msg.note')"
    )
    assert bp.shadow_eval("return root.querySelector('.msg.note').textContent") == (
        "A member of our team has joined the conversation."
    )
    bp.page.keyboard.press("Escape")
    in_thread(
        lambda: staff_reply_send(
            business=shop,
            conversation_id=conversation.pk,
            user=None,
            text="Hi, Sam here: yes, within 30 days.",
        )
    )
    bp.page.wait_for_function(
        "() => document.querySelector('bizagent-widget').shadowRoot.querySelector('.badge').textContent === '1'"
    )
    bp.page.locator("bizagent-widget button.launcher").click()
    assert bp.shadow_eval("return root.querySelector('.badge').textContent") == ""
    texts = bp.shadow_eval(
        "return [...root.querySelectorAll('.msg[data-id] .bubble')].map(b => b.textContent)"
    )
    assert texts == [
        "Can I return worn boots?",
        "Granite waterproof hiking boots: 159.00 EUR, in stock. Let me check that for you.",
        "Hi, Sam here: yes, within 30 days.",
    ]
    assert bp.shadow_eval("return root.querySelector('.msg[data-role=staff] .sr').textContent") == "Staff: "
    # The agent stays silent while a person has the conversation.
    assert stack.inference.chat_requests == 1
    assert_clean(bp)


def test_a_reply_is_rated_with_the_thumbs_and_the_rating_survives_a_reload(
    stack: Any, shop: Business, new_page: Callable[..., BrowserPage]
) -> None:
    stack.inference.script("It is a great pick for two.")
    bp = new_page()
    open_widget(bp, demo_url(stack, shop))
    ask(bp, "Do you have a 2-person tent?")
    wait_done(bp)
    reply = Message.objects.get(business=shop, role=Message.Role.AGENT)
    rate = "bizagent-widget .msg.agent:not(.greeting) .rate"
    up = bp.page.locator(f'{rate} button[aria-label="Helpful"]')
    down = bp.page.locator(f'{rate} button[aria-label="Not helpful"]')
    assert (up.get_attribute("aria-pressed"), down.get_attribute("aria-pressed")) == ("false", "false")
    # The customer's own message and the greeting get no buttons.
    assert bp.shadow_eval("return root.querySelectorAll('.rate').length") == 1

    down.click()
    bp.page.wait_for_function(
        "() => document.querySelector('bizagent-widget').shadowRoot"
        ".querySelector('.rate button[data-rating=down]')?.getAttribute('aria-pressed') === 'true'"
    )
    assert up.get_attribute("aria-pressed") == "false"
    reply.refresh_from_db()
    assert reply.rating == Message.Rating.DOWN and reply.rated_at is not None

    up.click()  # changed: still one rating
    bp.page.wait_for_function(
        "() => document.querySelector('bizagent-widget').shadowRoot"
        ".querySelector('.rate button[data-rating=up]')?.getAttribute('aria-pressed') === 'true'"
    )
    reply.refresh_from_db()
    assert reply.rating == Message.Rating.UP

    # A reload shows the stored rating (it comes back in the history).
    bp.page.reload()
    bp.page.locator("bizagent-widget textarea").wait_for(state="visible")
    wait_connected(bp)
    assert up.get_attribute("aria-pressed") == "true"
    assert down.get_attribute("aria-pressed") == "false"
    assert_clean(bp)


def test_a_closed_conversation_asks_how_we_did_and_the_score_is_stored(
    stack: Any, shop: Business, new_page: Callable[..., BrowserPage]
) -> None:
    stack.inference.script("It is a great pick for two.")
    bp = new_page()
    open_widget(bp, demo_url(stack, shop))
    ask(bp, "Do you have a 2-person tent?")
    wait_done(bp)
    conversation = Conversation.objects.get(business=shop)
    in_thread(lambda: conversation_close(business=shop, conversation_id=conversation.pk))
    bp.page.locator("bizagent-widget .csat").wait_for(state="visible")
    assert bp.shadow_eval("return root.querySelector('.msg.note').textContent") == (
        "This conversation was closed. Write again any time to start a new one."
    )
    assert bp.shadow_eval("return root.querySelector('.csat').getAttribute('aria-label')") == "How did we do?"
    good = bp.page.locator('bizagent-widget .csat button[aria-label="4 out of 5: Good"]')
    good.click()
    bp.page.wait_for_function(
        "() => document.querySelector('bizagent-widget').shadowRoot"
        ".querySelector('.csat button[data-score=\"4\"]')?.getAttribute('aria-pressed') === 'true'"
    )
    assert bp.shadow_eval("return root.querySelector('.csat .q').textContent") == "Thanks for your rating!"
    conversation.refresh_from_db()
    assert (conversation.state, conversation.csat_score) == (Conversation.State.CLOSED, 4)

    # Writing again starts a new conversation, answered by the agent.
    ask(bp, "And a 3-person tent?")
    wait_done(bp, count=2)
    assert Conversation.objects.filter(business=shop).count() == 2
    assert_clean(bp)


# A photo of a green tent in a meadow, drawn by the browser itself (a real JPEG the widget shows and the server
# takes): base64.
TENT_PHOTO_JS = """() => {
  const c = document.createElement("canvas");
  c.width = 640; c.height = 480;
  const g = c.getContext("2d");
  const sky = g.createLinearGradient(0, 0, 0, 340);
  sky.addColorStop(0, "#7fb8f0"); sky.addColorStop(1, "#dcefff");
  g.fillStyle = sky; g.fillRect(0, 0, 640, 480);
  g.fillStyle = "#6a9f45"; g.fillRect(0, 340, 640, 140);
  const tent = (points, colour) => {
    g.fillStyle = colour; g.beginPath(); g.moveTo(...points[0]);
    for (const p of points.slice(1)) g.lineTo(...p);
    g.closePath(); g.fill();
  };
  tent([[110, 370], [320, 120], [530, 370]], "#2e7d32");
  tent([[320, 120], [530, 370], [575, 350], [380, 125]], "#1f5f24");
  tent([[275, 370], [320, 235], [365, 370]], "#173f1a");
  return c.toDataURL("image/jpeg", 0.9).split(",")[1];
}"""
TENT_DESCRIPTION = "A green two-person dome tent with two doors."


def attach_photo(bp: BrowserPage, name: str, mime: str, data: bytes) -> None:
    """Choose a file as a keyboard user does: the photo button, Enter, the system's picker."""
    bp.page.locator("bizagent-widget button.attach").focus()
    with bp.page.expect_file_chooser() as chooser:
        bp.page.keyboard.press("Enter")
    chooser.value.set_files({"name": name, "mimeType": mime, "buffer": data})


def test_a_photo_is_attached_from_the_keyboard_and_answered_with_the_product(
    stack: Any,
    demo_shop: Business,
    new_page: Callable[..., BrowserPage],
    artifacts_dir: Path,
    stack_env: dict[str, str],
) -> None:
    shop = demo_shop
    stack.inference.image_reply = TENT_DESCRIPTION
    stack.inference.script("It is a great pick for two.")
    bp = new_page()
    # Playwright turns on its interception of file pickers when a listener is added, asynchronously: one added
    # only by expect_file_chooser can come after the click (the picker then never shows).
    bp.page.on("filechooser", lambda chooser: None)
    open_widget(bp, demo_url(stack, shop))
    photo = base64.b64decode(bp.page.evaluate(TENT_PHOTO_JS))
    attach = bp.page.locator("bizagent-widget button.attach")
    assert (attach.get_attribute("aria-label"), attach.get_attribute("aria-disabled")) == (
        "Send a photo",
        "false",
    )

    # What was typed is the photo's caption; the photo shows at once in the visitor's bubble, sending.
    bp.page.locator("bizagent-widget textarea").fill("Do you have this?")
    attach_photo(bp, "tent.jpg", "image/jpeg", photo)
    shown = bp.shadow_eval(
        "const m = root.querySelector('.msg.customer'); const img = m.querySelector('img.photo');"
        " return [img.src.slice(0, 5), m.querySelector('.cap').textContent, root.querySelector('textarea').value,"
        " root.activeElement && root.activeElement.id]"
    )
    assert shown == ["blob:", "Do you have this?", "", "bizagent-input"]
    wait_done(bp)

    # The photo was described by the pool, and the agent answered the question it shows, citing the row.
    customer = Message.objects.get(business=shop, role=Message.Role.CUSTOMER)
    assert (customer.status, customer.text) == (
        "answered",
        f"Do you have this?\n(My photo shows: {TENT_DESCRIPTION})",
    )
    media = MessageMedia.objects.get(message=customer)
    assert (media.state, media.content_type, media.size, media.description) == (
        "read",
        "image/jpeg",
        len(photo),
        TENT_DESCRIPTION,
    )
    assert stack_media_path(stack_env, media.file.name).read_bytes() == photo
    reply = Message.objects.get(business=shop, role=Message.Role.AGENT)
    assert "TENT-2P" in [card["external_id"] for card in reply.cards]
    assert agent_texts(bp)[-1].startswith(TENT_FACTS)
    bubble = bp.shadow_eval(
        "const m = root.querySelector('.msg.customer'); const img = m.querySelector('img.photo');"
        " return [img.complete && img.naturalWidth, m.classList.contains('uploading'), !!m.querySelector('.meta')]"
    )
    assert bubble == [640, False, False]  # decoded (the page's CSP allows blob: images), no longer sending
    assert bp.shadow_eval("return root.querySelector('.card .ct').textContent") == "Ridgeline 2-person tent"
    assert_clean(bp)
    # For the docs: the photo at the top of the conversation, the answer below it.
    bp.shadow_eval(
        "const log = root.querySelector('.log'), m = root.querySelector('.msg.customer');"
        " log.scrollTop = m.offsetTop - log.offsetTop - 12"
    )
    bp.page.screenshot(path=str(artifacts_dir / "widget-image-upload.png"))
    publish_screenshot(artifacts_dir / "widget-image-upload.png")

    # Refused in the widget, before anything is sent: not a JPEG, PNG or WebP; over the server's limit.
    attach_photo(bp, "notes.gif", "image/gif", b"GIF89a" + bytes(100))
    attach_photo(bp, "huge.jpg", "image/jpeg", b"\xff\xd8\xff" + bytes(5 * 1024 * 1024))
    notes = bp.shadow_eval("return [...root.querySelectorAll('.msg.note')].map(n => n.textContent)")
    assert notes == [
        "Please choose a JPEG, PNG or WebP photo.",
        "That photo is too large. Please choose one under 5 MB.",
    ]
    # Bytes that only say they are a JPEG: the server's refusal (415) under the photo, with no "Try again".
    attach_photo(bp, "fake.jpg", "image/jpeg", b"not a photo at all")
    bp.page.locator("bizagent-widget .msg.customer .meta.err").wait_for()
    refused = bp.shadow_eval(
        "const m = [...root.querySelectorAll('.msg.customer')].pop();"
        " return [m.querySelector('.meta.err').textContent, !!m.querySelector('.link-btn')]"
    )
    assert refused == ["Please choose a JPEG, PNG or WebP photo.", False]
    assert MessageMedia.objects.count() == 1
    stack_media_path(stack_env, media.file.name).unlink()
    assert_clean(bp)
