"""WhatsApp carts (``order`` messages): stored as an ``Order`` checked against our catalog as of now, and
acknowledged with our own prices and total.

A cart carries the prices the customer's app showed, which may be stale, and items we may no longer sell. So
every line is looked up among the business's active items by its retailer id (our SKU, ``Item.external_id``):
the acknowledgement names each line the cart got wrong (an unknown item, one out of stock, a price that
changed) and its total is the sum of what we can sell at our prices. Then the order goes where the business
said (``Agent.checkout_url_template``): a checkout link built from the template, or staff (the conversation is
handed over, and the order waits in the inbox).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import quote

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from agents.question import language_of
from agents.selectors import agent_for
from catalogs.models import Availability, Item
from catalogs.selectors import items_by_external_ids
from messaging.meta.parser import InboundOrder
from messaging.models import ChannelAccount, Conversation, Message, Order, OrderLine
from messaging.selectors import last_customer_text
from messaging.services import conversation_handoff, conversation_open, fixed_reply_send

# Items a cart may not have: nothing to sell.
_NOT_SOLD = (Availability.OUT_OF_STOCK, Availability.DISCONTINUED)
MAX_QUANTITY = 9999


def _money(value: Decimal, currency: str) -> str:
    return f"{value:.2f} {currency}".strip()


def _line(position: int, cart: InboundOrder, item: Item | None, business_id: int) -> OrderLine:
    wanted = cart.lines[position]
    line = OrderLine(
        business_id=business_id,
        position=position,
        product_retailer_id=wanted.product_retailer_id,
        quantity=min(wanted.quantity, MAX_QUANTITY),
        cart_price=wanted.item_price,
        cart_currency=wanted.currency,
    )
    if item is None:
        line.problem = OrderLine.Problem.UNKNOWN_ITEM
        return line
    line.item, line.title, line.currency = item, item.title, item.currency
    ours = item.sale_price if item.sale_price is not None else item.price
    if item.availability in _NOT_SOLD:
        line.problem = OrderLine.Problem.OUT_OF_STOCK
    elif ours is None:
        line.problem = OrderLine.Problem.NO_PRICE
    else:
        line.price = ours
        if wanted.item_price is not None and (
            wanted.item_price.quantize(Decimal("0.01")) != ours
            or (wanted.currency and wanted.currency != item.currency)
        ):
            line.problem = OrderLine.Problem.PRICE_CHANGED
    return line


def order_lines_checked(business_id: int, cart: InboundOrder, items: dict[str, Item]) -> list[OrderLine]:
    """The cart's lines checked against ``items`` (the business's active items by SKU), unsaved."""
    return [
        _line(position, cart, items.get(wanted.product_retailer_id), business_id)
        for position, wanted in enumerate(cart.lines)
    ]


def order_totals(lines: list[OrderLine]) -> dict[str, str]:
    """What we can sell, at our prices, per currency."""
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for line in lines:
        if line.price is not None:
            sums[line.currency] += line.price * line.quantity
    return {currency: f"{total:.2f}" for currency, total in sums.items()}


@dataclass(frozen=True)
class Wording:
    """The acknowledgement's fixed words in one language; ``{...}`` are our data (names, amounts, the link)."""

    thanks: str
    not_in_catalog: str  # the line's quantity and name come before each problem
    out_of_stock: str
    no_price: str
    price_changed: str  # {now}: our price, {was}: the cart's
    each: str  # {price}: our price of one, after a line of several
    total: str  # {amounts}
    nothing_to_sell: str
    checkout: str  # {url}
    staff: str


# The languages ``agents.question.language_of`` tells apart (the customer's; English when unknown).
WORDINGS = {
    "en": Wording(
        thanks="Thank you for your order! Here it is with our current prices:",
        not_in_catalog="not in our catalog, not included",
        out_of_stock="out of stock, not included",
        no_price="no price in our catalog, not included",
        price_changed="(the price is now {now}, not {was})",
        each="({price} each)",
        total="Total: {amounts}",
        nothing_to_sell="Nothing in this order can be sold as it is.",
        checkout="Complete your order here: {url}",
        staff="A member of our team will confirm your order here shortly.",
    ),
    "de": Wording(
        thanks="Vielen Dank für Ihre Bestellung! Hier ist sie mit unseren aktuellen Preisen:",
        not_in_catalog="nicht in unserem Katalog, nicht enthalten",
        out_of_stock="nicht vorrätig, nicht enthalten",
        no_price="kein Preis in unserem Katalog, nicht enthalten",
        price_changed="(der Preis ist jetzt {now}, nicht {was})",
        each="(je {price})",
        total="Gesamt: {amounts}",
        nothing_to_sell="In dieser Bestellung ist nichts, was wir so verkaufen können.",
        checkout="Schließen Sie Ihre Bestellung hier ab: {url}",
        staff="Ein Mitarbeiter unseres Teams bestätigt Ihre Bestellung in Kürze hier.",
    ),
    "fr": Wording(
        thanks="Merci pour votre commande ! La voici avec nos prix actuels :",
        not_in_catalog="absent de notre catalogue, non inclus",
        out_of_stock="en rupture de stock, non inclus",
        no_price="sans prix dans notre catalogue, non inclus",
        price_changed="(le prix est maintenant de {now}, et non de {was})",
        each="({price} l'unité)",
        total="Total : {amounts}",
        nothing_to_sell="Rien dans cette commande ne peut être vendu en l'état.",
        checkout="Finalisez votre commande ici : {url}",
        staff="Un membre de notre équipe va confirmer votre commande ici sous peu.",
    ),
    "es": Wording(
        thanks="¡Gracias por tu pedido! Aquí lo tienes con nuestros precios actuales:",
        not_in_catalog="no está en nuestro catálogo, no incluido",
        out_of_stock="agotado, no incluido",
        no_price="sin precio en nuestro catálogo, no incluido",
        price_changed="(ahora el precio es {now}, no {was})",
        each="({price} la unidad)",
        total="Total: {amounts}",
        nothing_to_sell="No podemos vender nada de este pedido tal como está.",
        checkout="Completa tu pedido aquí: {url}",
        staff="Una persona de nuestro equipo confirmará tu pedido aquí en breve.",
    ),
    "it": Wording(
        thanks="Grazie per il tuo ordine! Eccolo con i nostri prezzi attuali:",
        not_in_catalog="non presente nel nostro catalogo, non incluso",
        out_of_stock="esaurito, non incluso",
        no_price="senza prezzo nel nostro catalogo, non incluso",
        price_changed="(ora il prezzo è {now}, non {was})",
        each="({price} al pezzo)",
        total="Totale: {amounts}",
        nothing_to_sell="Nessun articolo di questo ordine può essere venduto così com'è.",
        checkout="Completa il tuo ordine qui: {url}",
        staff="Una persona del nostro team confermerà a breve il tuo ordine qui.",
    ),
    "nl": Wording(
        thanks="Bedankt voor je bestelling! Hier is een overzicht met onze huidige prijzen:",
        not_in_catalog="niet in onze catalogus, niet inbegrepen",
        out_of_stock="niet op voorraad, niet inbegrepen",
        no_price="geen prijs in onze catalogus, niet inbegrepen",
        price_changed="(de prijs is nu {now}, niet {was})",
        each="({price} per stuk)",
        total="Totaal: {amounts}",
        nothing_to_sell="Niets uit deze bestelling kunnen we zo verkopen.",
        checkout="Rond je bestelling hier af: {url}",
        staff="Een medewerker van ons team bevestigt je bestelling hier binnenkort.",
    ),
}


def _described(line: OrderLine, words: Wording) -> str:
    name = line.title or line.product_retailer_id
    if line.problem == OrderLine.Problem.UNKNOWN_ITEM:
        return f"- {line.quantity} x {name}: {words.not_in_catalog}"
    if line.problem == OrderLine.Problem.OUT_OF_STOCK:
        return f"- {line.quantity} x {name}: {words.out_of_stock}"
    if line.problem == OrderLine.Problem.NO_PRICE or line.price is None:
        return f"- {line.quantity} x {name}: {words.no_price}"
    text = f"- {line.quantity} x {name}: {_money(line.price * line.quantity, line.currency)}"
    if line.problem == OrderLine.Problem.PRICE_CHANGED and line.cart_price is not None:
        was = _money(line.cart_price, line.cart_currency or line.currency)
        return f"{text} {words.price_changed.format(now=_money(line.price, line.currency), was=was)}"
    if line.quantity > 1:
        return f"{text} {words.each.format(price=_money(line.price, line.currency))}"
    return text


def acknowledgement_text(
    lines: list[OrderLine], totals: dict[str, str], checkout_url: str, language_hint: str = ""
) -> str:
    """What the customer reads: each line at our price (or why it is not included), our total, what next; in
    the language of ``language_hint`` (the customer's words: the cart's note or their last message)."""
    words = WORDINGS[language_of(language_hint, "en")]
    parts = [words.thanks, *(_described(line, words) for line in lines)]
    if totals:
        amounts = " + ".join(_money(Decimal(v), c) for c, v in sorted(totals.items()))
        parts.append(words.total.format(amounts=amounts))
    else:
        parts.append(words.nothing_to_sell)
    if checkout_url and totals:
        parts.append(words.checkout.format(url=checkout_url))
    else:
        parts.append(words.staff)
    return "\n".join(parts)


def checkout_url(template: str, order_id: int, lines: list[OrderLine]) -> str:
    """The business's checkout address with ``{order_id}`` and ``{items}`` (``SKU:quantity`` pairs, comma
    separated, of the lines we can sell) filled in, each URL-encoded."""
    items = ",".join(
        f"{line.product_retailer_id}:{line.quantity}" for line in lines if line.price is not None
    )
    return template.replace("{order_id}", quote(str(order_id), safe="")).replace(
        "{items}", quote(items, safe="")
    )


def _cart_summary(cart: InboundOrder) -> str:
    """The customer's message as the inbox shows it: the cart as sent."""
    lines = []
    for wanted in cart.lines:
        price = f" at {_money(wanted.item_price, wanted.currency)}" if wanted.item_price is not None else ""
        lines.append(f"- {wanted.quantity} x {wanted.product_retailer_id}{price}")
    note = [cart.text.strip()] if cart.text.strip() else []
    return "\n".join(["[order]", *lines, *note])


def order_receive(
    *,
    account: ChannelAccount,
    sender_id: str,
    sender_name: str,
    message_id: str,
    received_at: dt.datetime,
    cart: InboundOrder,
) -> Order | None:
    """Store a cart as an order checked against the catalog now, with our acknowledgement queued for sending,
    and send the order on (checkout link or staff). None for a redelivery (the message's platform id is
    stored already): nothing is written or sent. A conversation a person has is not answered: the order is
    stored for them."""
    business = account.business
    items = items_by_external_ids(business, [line.product_retailer_id for line in cart.lines])
    agent = agent_for(business)
    with transaction.atomic(durable=True):
        conversation = conversation_open(
            business=business, channel=account.kind, contact_external_id=sender_id, contact_name=sender_name
        )
        bot = conversation.state == Conversation.State.BOT
        try:
            with transaction.atomic():
                customer = Message.objects.create(
                    business=business,
                    conversation=conversation,
                    channel=account.kind,
                    role=Message.Role.CUSTOMER,
                    text=_cart_summary(cart),
                    status=Message.Status.ANSWERED if bot else Message.Status.SKIPPED,
                    channel_message_id=message_id,
                )
        except IntegrityError:
            return None
        Conversation.objects.filter(pk=conversation.pk).filter(
            Q(last_customer_message_at__isnull=True) | Q(last_customer_message_at__lt=received_at)
        ).update(last_customer_message_at=received_at, updated_at=timezone.now())
        lines = order_lines_checked(business.pk, cart, items)
        totals = order_totals(lines)
        template = agent.checkout_url_template
        order = Order.objects.create(
            business=business,
            conversation=conversation,
            message=customer,
            catalog_id=cart.catalog_id[:64],
            note=cart.text,
            totals=totals,
            next_step=Order.Next.CHECKOUT if template and totals else Order.Next.STAFF,
        )
        for line in lines:
            line.order = order
        OrderLine.objects.bulk_create(lines)
        if order.next_step == Order.Next.CHECKOUT:
            order.checkout_url = checkout_url(template, order.pk, lines)
        if bot:
            hint = _language_hint(cart, customer)
            order.acknowledgement = fixed_reply_send(
                conversation=conversation,
                customer=customer,
                text=acknowledgement_text(lines, totals, order.checkout_url, hint),
                language_hint=hint,
                agent=agent,
            )
        order.save(update_fields=["checkout_url", "acknowledgement"])
    if order.next_step == Order.Next.STAFF:
        conversation_handoff(business=business, conversation_id=conversation.pk, reason=f"order #{order.pk}")
    return order


def _language_hint(cart: InboundOrder, customer: Message) -> str:
    """The customer's own words, for the acknowledgement's language: the cart's note, else their last message
    before it in this conversation."""
    if cart.text.strip():
        return cart.text
    return last_customer_text(customer.conversation_id, before=customer.pk)
