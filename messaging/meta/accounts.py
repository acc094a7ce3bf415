"""Writes for channel accounts: connecting a WhatsApp number, Messenger page or Instagram account once Meta has
confirmed that the token controls it (``messaging.meta.ownership``), and disconnecting it."""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.utils import timezone

from businesses.models import Business
from messaging.meta import ownership
from messaging.meta import selectors as meta_selectors
from messaging.models import ChannelAccount

logger = logging.getLogger(__name__)


class ChannelAccountError(ValueError):
    """A connect request that cannot be honoured (missing id or token, id connected to another business)."""


_REQUIRED: dict[str, tuple[str, ...]] = {
    ChannelAccount.Kind.WHATSAPP.value: ("phone_number_id",),
    ChannelAccount.Kind.MESSENGER.value: ("page_id",),
    ChannelAccount.Kind.INSTAGRAM.value: ("instagram_account_id",),
}


def channel_account_connect(
    *,
    business: Business,
    kind: str,
    access_token: str,
    name: str = "",
    waba_id: str = "",
    phone_number_id: str = "",
    display_phone_number: str = "",
    page_id: str = "",
    instagram_account_id: str = "",
    app_secret: str = "",
    verify_token: str = "",
    template_name: str = "",
    template_language: str = "en_US",
) -> ChannelAccount:
    """Connect (or reconnect, replacing the token) a WhatsApp number, Messenger page or Instagram account,
    once Meta has confirmed that the token controls it (``messaging.meta.ownership``).

    WhatsApp needs ``waba_id`` and ``phone_number_id``; Messenger ``page_id`` (with that page's token);
    Instagram ``page_id`` (the Facebook Page that sends for it, with its token) and optionally
    ``instagram_account_id``, which must be the account Meta says is linked to the page. Only what Meta
    confirmed is stored: ``display_phone_number`` comes from Meta, the argument is ignored. ``app_secret``
    empty: the deployment's META_APP_SECRET verifies its webhooks. Raises ChannelAccountError when an id or
    the token is missing, when Meta does not confirm the ids (or cannot be reached), or when the id is
    connected to another business."""
    del display_phone_number  # taken from Meta's answer
    if kind not in _REQUIRED:
        raise ChannelAccountError(f"unknown channel kind {kind!r}")
    token = access_token.strip()
    waba_id, phone_number_id = waba_id.strip(), phone_number_id.strip()
    page_id, instagram_account_id = page_id.strip(), instagram_account_id.strip()
    needed = {
        ChannelAccount.Kind.WHATSAPP.value: {"waba_id": waba_id, "phone_number_id": phone_number_id},
        ChannelAccount.Kind.MESSENGER.value: {"page_id": page_id},
        ChannelAccount.Kind.INSTAGRAM.value: {"page_id": page_id},
    }[kind]
    for field_name, value in needed.items():
        if not value:
            raise ChannelAccountError(f"{field_name} is required for {kind}")
    if not token:
        raise ChannelAccountError("access_token is required")
    # Asked before anything is read or written: whether an id is taken is nobody's business but its owner's.
    try:
        if kind == ChannelAccount.Kind.WHATSAPP:
            confirmed = ownership.whatsapp(token=token, waba_id=waba_id, phone_number_id=phone_number_id)
        elif kind == ChannelAccount.Kind.MESSENGER:
            confirmed = ownership.page(token=token, page_id=page_id)
        else:
            confirmed = ownership.instagram(
                token=token, page_id=page_id, instagram_account_id=instagram_account_id
            )
    except ownership.OwnershipError as exc:
        logger.info("channel connect refused for business %s (%s): %s", business.pk, kind, exc)
        raise ChannelAccountError(str(exc)) from exc
    return _account_save(
        business=business,
        kind=kind,
        confirmed=confirmed,
        access_token=token,
        name=name.strip() or confirmed.name,
        app_secret=app_secret,
        verify_token=verify_token,
        template_name=template_name,
        template_language=template_language,
    )


def channel_account_connect_embedded(
    *,
    business: Business,
    code: str,
    waba_id: str = "",
    phone_number_id: str = "",
    name: str = "",
    template_name: str = "",
    template_language: str = "en_US",
) -> ChannelAccount:
    """Connect a WhatsApp number through Embedded Signup: ``code`` is what the JS SDK's ``FB.login`` returned
    (``authResponse.code``); ``waba_id`` / ``phone_number_id`` are the session info the popup posted
    (``WA_EMBEDDED_SIGNUP`` / ``FINISH``), used only to choose among what Meta says was granted. The code is
    exchanged for the business token, the app is subscribed to the WABA's webhooks, and the account is
    stored with the ids Meta confirmed. Raises ChannelAccountError like ``channel_account_connect``."""
    if not code.strip():
        raise ChannelAccountError("code is required")
    try:
        token, confirmed = ownership.embedded_signup(
            code=code.strip(), waba_id=waba_id.strip(), phone_number_id=phone_number_id.strip()
        )
        # Taken before subscribing: a number connected to another business must not be re-subscribed here.
        _ensure_free(business, ChannelAccount.Kind.WHATSAPP.value, confirmed)
        ownership.subscribe_app(token=token, waba_id=confirmed.waba_id)
    except ownership.OwnershipError as exc:
        logger.info("embedded signup refused for business %s: %s", business.pk, exc)
        raise ChannelAccountError(str(exc)) from exc
    return _account_save(
        business=business,
        kind=ChannelAccount.Kind.WHATSAPP.value,
        confirmed=confirmed,
        access_token=token,
        name=name.strip(),
        app_secret="",
        verify_token="",
        template_name=template_name,
        template_language=template_language,
    )


_KIND_LABEL = {"whatsapp": "WhatsApp number", "messenger": "Facebook Page", "instagram": "Instagram account"}


def _taken(kind: str) -> ChannelAccountError:
    return ChannelAccountError(
        f"this {_KIND_LABEL[kind]} is already connected to another business; it must be disconnected there first"
    )


def _ensure_free(business: Business, kind: str, confirmed: ownership.Confirmed) -> None:
    routing_field = _REQUIRED[kind][0]
    if (
        ChannelAccount.objects.filter(
            kind=kind, active=True, **{routing_field: getattr(confirmed, routing_field)}
        )
        .exclude(business=business)
        .exists()
    ):
        raise _taken(kind)


def _account_save(
    *,
    business: Business,
    kind: str,
    confirmed: ownership.Confirmed,
    access_token: str,
    name: str,
    app_secret: str,
    verify_token: str,
    template_name: str,
    template_language: str,
) -> ChannelAccount:
    routing_field = _REQUIRED[kind][0]
    with transaction.atomic(durable=True):
        # Tenants' own app secrets are cached for webhook intake: this process reads them afresh.
        transaction.on_commit(meta_selectors.signing_keys_forget)
        existing = (
            ChannelAccount.objects.select_for_update()
            .filter(kind=kind, active=True, **{routing_field: getattr(confirmed, routing_field)})
            .first()
        )
        if existing is not None and existing.business_id != business.pk:
            raise _taken(kind)
        account = existing or ChannelAccount(business=business, kind=kind)
        account.name = name[:100]
        account.waba_id = confirmed.waba_id
        account.phone_number_id = confirmed.phone_number_id
        account.display_phone_number = confirmed.display_phone_number
        account.page_id = confirmed.page_id
        account.instagram_account_id = confirmed.instagram_account_id
        account.access_token = access_token
        account.app_secret = app_secret.strip()
        account.verify_token = verify_token.strip()[:200]
        account.template_name = template_name.strip()[:512]
        account.template_language = (template_language or "en_US").strip()[:16]
        try:
            with transaction.atomic():
                account.save()
        except IntegrityError as exc:
            # The partial unique constraints (one active account per id) decide a race between two tenants.
            raise _taken(kind) from exc
    logger.info("channel account %s connected for business %s (%s)", account.pk, business.pk, kind)
    return account


def channel_account_disconnect(*, business: Business, account_id: int) -> bool:
    """Stop routing and sending through the account; its secrets are erased. False if it is not this
    business's active account."""
    with transaction.atomic(durable=True):
        updated = ChannelAccount.objects.filter(business=business, pk=account_id, active=True).update(
            active=False, access_token="", app_secret="", verify_token="", updated_at=timezone.now()
        )
        transaction.on_commit(meta_selectors.signing_keys_forget)
    return updated == 1


def channel_account_set_catalog(*, business: Business, account_id: int, catalog_id: str) -> bool:
    """Name the Meta commerce catalog connected to a WhatsApp account (its retailer ids must be the business's
    SKUs), or none (""): product replies then go out as product messages (messaging.meta.products). Meta
    refuses a catalog the WABA is not connected to when a product message names it, so a wrong id costs the
    business its own product messages, nothing of anyone else's. False when the id is not a number or the
    account is not this business's active WhatsApp account."""
    catalog_id = catalog_id.strip()
    if catalog_id and not catalog_id.isdigit():
        return False
    with transaction.atomic(durable=True):
        updated = ChannelAccount.objects.filter(
            business=business, pk=account_id, active=True, kind=ChannelAccount.Kind.WHATSAPP
        ).update(commerce_catalog_id=catalog_id[:64], updated_at=timezone.now())
    return updated == 1
