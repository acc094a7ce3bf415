"""Product cards: the catalog facts of the products a reply names, built from catalog rows (``GroundItem``
snapshots), never from the model's text."""

from __future__ import annotations

from typing import TypedDict

from agents.grounding import GroundingResult, GroundItem


class Card(TypedDict):
    """A product card (on ``message.done`` and the stored reply; docs/websocket-protocol.md, "Cards"): catalog
    facts only. Prices are strings with two decimals."""

    item_id: int
    external_id: str
    title: str
    price: str | None
    sale_price: str | None
    currency: str
    availability: str
    image_url: str
    url: str


def card_for(item: GroundItem) -> Card:
    return {
        "item_id": item.item_id,
        "external_id": item.external_id,
        "title": item.title,
        "price": f"{item.price:.2f}" if item.price is not None else None,
        "sale_price": f"{item.sale_price:.2f}" if item.sale_price is not None else None,
        "currency": item.currency,
        "availability": item.availability,
        "image_url": item.image_url,
        "url": item.url,
    }


def cards_for(result: GroundingResult, items: list[GroundItem], *, fallback: int = 3) -> list[Card]:
    """Cards for the products the reply names (in the reply's order); a withheld reply shows the top
    ``fallback`` cited products instead, so that the customer still gets the catalog's facts."""
    by_id = {item.item_id: item for item in items}
    chosen = [by_id[i] for i in result.products_mentioned if i in by_id]
    if not chosen and result.action == "withheld":
        chosen = items[:fallback]
    return [card_for(item) for item in chosen]
