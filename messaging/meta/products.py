"""A reply's product cards as each platform's own product messages. Pure functions.

WhatsApp (interactive messages):
- with a Meta commerce catalog connected to the account (``ChannelAccount.commerce_catalog_id``), whose
  retailer ids are our SKUs (a card's ``external_id``): one product -> a ``product`` message; several -> one
  ``product_list`` (at most 30 products in at most 10 sections);
- without one: one product with an https link -> an image header with a "View" URL button (``cta_url``), or
  an image with a caption; several -> a ``list`` message (at most 10 rows), each row naming the product, its
  price and availability; a tapped row comes back as a ``list_reply`` with the row's id (``item_payload``).
Messenger and Instagram: one generic template, a carousel of at most 10 elements (image, title, the price and
availability, a "View" URL button and a "Details" postback whose payload is ``item_payload``).

Every text is clipped to the platform's documented limit (``LIMITS``). The answer's text travels with them,
shortened to its first sentences (``outbound.short_text``): the products' facts are in the product messages.
The buttons' words ("View", "Details", "Products") are in the language of the question the reply answers
(``LABELS``, English when unknown).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agents.cards import Card
from agents.question import language_of

# Meta's documented limits (WhatsApp "Interactive messages" and Messenger "Generic template" references).
LIMITS = {
    "body": 1024,  # interactive body text (product, product_list, cta_url, button)
    "header": 60,  # interactive text header
    "button": 20,  # a button's title, the list's button, cta_url's display text
    "section_title": 24,
    "row_title": 24,
    "row_description": 72,
    "row_id": 200,
    "list_rows": 10,  # rows of a list message, all sections together
    "list_sections": 10,
    "product_items": 30,  # products of a product_list, all sections together
    "product_sections": 10,
    "generic_elements": 10,
    "generic_title": 80,
    "generic_subtitle": 80,
    "generic_buttons": 3,
    "postback_payload": 1000,
}
# The prefix of our buttons' payloads and list rows' ids: the catalog item they name.
ITEM_PAYLOAD = "item:"


@dataclass(frozen=True)
class Labels:
    """The words on our buttons, each within LIMITS["button"] (and "section_title" for ``products``)."""

    view: str  # the link to the product's page (WhatsApp cta_url, Messenger/Instagram web_url)
    details: str  # the postback that asks about the product (Messenger/Instagram)
    products: str  # the WhatsApp list's button and its section's title


LABELS = {
    "en": Labels(view="View", details="Details", products="Products"),
    "de": Labels(view="Ansehen", details="Details", products="Produkte"),
    "fr": Labels(view="Voir", details="Détails", products="Produits"),
    "es": Labels(view="Ver", details="Detalles", products="Productos"),
    "it": Labels(view="Vedi", details="Dettagli", products="Prodotti"),
    "nl": Labels(view="Bekijken", details="Details", products="Producten"),
}


def labels(language_hint: str) -> Labels:
    """The buttons' words in the language of ``language_hint`` (the question the reply answers)."""
    return LABELS[language_of(language_hint, "en")]


def item_payload(card: Card) -> str:
    """What a tap on a product's button or list row sends back: ``item:<our item id>``."""
    return f"{ITEM_PAYLOAD}{card['item_id']}"


def item_id_of(payload: str) -> int | None:
    """The catalog item a postback payload or list row id names, if it is one of ours."""
    if not payload.startswith(ITEM_PAYLOAD):
        return None
    value = payload[len(ITEM_PAYLOAD) :]
    return int(value) if value.isdigit() else None


def clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def price(card: Card) -> str:
    value = card.get("sale_price") or card.get("price")
    if not value:
        return ""
    return f"{value} {card.get('currency') or ''}".strip()


def _availability(card: Card) -> str:
    return str(card.get("availability") or "").replace("_", " ").strip()


def _facts(card: Card, separator: str) -> str:
    return separator.join(part for part in (price(card), _availability(card)) if part)


def caption(card: Card) -> str:
    """Title, price and availability, one per line."""
    return "\n".join(p for p in (str(card.get("title") or "").strip(), _facts(card, "\n")) if p)


# --- WhatsApp ---------------------------------------------------------------------------------------------


def whatsapp_products(cards: list[Card], text: str, catalog_id: str, words: Labels) -> list[dict[str, Any]]:
    """The WhatsApp messages for a reply's ``cards``, ``text`` (already short) among them where a product
    message has a body for it; the caller sends ``text`` on its own when no returned message carries it
    (``whatsapp_carries_text``). ``words``: the buttons' (``labels``)."""
    if not cards:
        return []
    listed = [c for c in cards if str(c.get("external_id") or "").strip()]
    if catalog_id and listed:
        if len(listed) == 1:
            return [_product(listed[0], text, catalog_id)]
        return [_product_list(listed, text, catalog_id)]
    titled = [c for c in cards if str(c.get("title") or "").strip()]
    if len(titled) > 1 and text:
        return [_list(titled, text, words)]
    message = _card_message(titled[0], words) if titled else None
    return [message] if message is not None else []


def whatsapp_carries_text(message: dict[str, Any]) -> bool:
    """Whether a product message's body is the answer's text (product, product_list, list)."""
    interactive = message.get("interactive") or {}
    return interactive.get("type") in ("product", "product_list", "list")


def _product(card: Card, text: str, catalog_id: str) -> dict[str, Any]:
    interactive: dict[str, Any] = {
        "type": "product",
        "action": {"catalog_id": catalog_id, "product_retailer_id": card["external_id"]},
    }
    if text:
        interactive["body"] = {"text": clip(text, LIMITS["body"])}
    return {"type": "interactive", "interactive": interactive}


def _product_list(cards: list[Card], text: str, catalog_id: str) -> dict[str, Any]:
    # One section: a section title is required only with several, and one section holds all 30 products.
    items = [{"product_retailer_id": c["external_id"]} for c in cards[: LIMITS["product_items"]]]
    return {
        "type": "interactive",
        "interactive": {
            "type": "product_list",
            "header": {"type": "text", "text": clip(str(cards[0].get("title") or ""), LIMITS["header"])},
            "body": {"text": clip(text or caption(cards[0]), LIMITS["body"])},
            "action": {"catalog_id": catalog_id, "sections": [{"product_items": items}]},
        },
    }


def _list(cards: list[Card], text: str, words: Labels) -> dict[str, Any]:
    rows = []
    for card in cards[: LIMITS["list_rows"]]:
        row = {"id": item_payload(card), "title": clip(str(card["title"]), LIMITS["row_title"])}
        facts = _facts(card, " · ")
        if facts:
            row["description"] = clip(facts, LIMITS["row_description"])
        rows.append(row)
    return {
        "type": "interactive",
        "interactive": {
            "type": "list",
            "body": {"text": clip(text, LIMITS["body"])},
            "action": {"button": words.products, "sections": [{"title": words.products, "rows": rows}]},
        },
    }


def _card_message(card: Card, words: Labels) -> dict[str, Any] | None:
    """One product without a catalog: interactive ``cta_url`` (image header, caption, a "View" button) when
    it has an https link, else an image with the caption, else nothing (its facts are in the text)."""
    text = caption(card)
    image, url = str(card.get("image_url") or ""), str(card.get("url") or "")
    if url.startswith("https://") and text:
        interactive: dict[str, Any] = {
            "type": "cta_url",
            "body": {"text": clip(text, LIMITS["body"])},
            "action": {"name": "cta_url", "parameters": {"display_text": words.view, "url": url}},
        }
        if image:
            interactive["header"] = {"type": "image", "image": {"link": image}}
        return {"type": "interactive", "interactive": interactive}
    if image:
        return {"type": "image", "image": {"link": image, "caption": clip(text, LIMITS["body"])}}
    return None


# --- Messenger and Instagram -----------------------------------------------------------------------------------


def generic_template(cards: list[Card], words: Labels) -> dict[str, Any] | None:
    """A generic template (a carousel) of up to 10 products; ``words``: the buttons' (``labels``)."""
    elements = []
    for card in cards[: LIMITS["generic_elements"]]:
        title = str(card.get("title") or "").strip()
        if not title:
            continue
        element: dict[str, Any] = {"title": clip(title, LIMITS["generic_title"])}
        subtitle = _facts(card, " · ")
        if subtitle:
            element["subtitle"] = clip(subtitle, LIMITS["generic_subtitle"])
        if card.get("image_url"):
            element["image_url"] = card["image_url"]
        buttons: list[dict[str, str]] = []
        if str(card.get("url") or "").startswith("https://"):
            buttons.append({"type": "web_url", "url": card["url"], "title": words.view})
        buttons.append({"type": "postback", "title": words.details, "payload": item_payload(card)})
        element["buttons"] = buttons
        elements.append(element)
    if not elements:
        return None
    return {"attachment": {"type": "template", "payload": {"template_type": "generic", "elements": elements}}}
