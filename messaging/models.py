"""Who talks to a business (Contact), their threads (Conversation) and every message in them."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from businesses.crypto import EncryptedTextField
from businesses.models import Business
from catalogs.models import Item


class Channel(models.TextChoices):
    WIDGET = "widget", "Web widget"
    WHATSAPP = "whatsapp", "WhatsApp"
    MESSENGER = "messenger", "Messenger"
    INSTAGRAM = "instagram", "Instagram"


class Contact(models.Model):
    """One identity on one channel: a widget visitor id, a WhatsApp wa_id or BSUID, a Messenger PSID, an IGSID."""

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="contacts")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    external_id = models.CharField(max_length=128)
    name = models.CharField(max_length=200, blank=True)
    # What a widget visitor said of itself (BizAgent.identify on the business's page): shown to staff,
    # never trusted for anything else.
    email = models.CharField(max_length=200, blank=True)
    phone = models.CharField(max_length=200, blank=True)
    reference = models.CharField(max_length=200, blank=True, help_text="The site's own id for the visitor")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["business", "channel", "external_id"], name="contact_unique_identity"
            )
        ]

    def __str__(self) -> str:
        return self.name or f"{self.channel}:{self.external_id}"


class Conversation(models.Model):
    class State(models.TextChoices):
        BOT = "bot", "Agent answers"
        HUMAN = "human", "Staff answers"
        CLOSED = "closed", "Closed"

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="conversations")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="conversations")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    state = models.CharField(max_length=10, choices=State.choices, default=State.BOT)
    handoff_reason = models.CharField(max_length=200, blank=True)
    last_customer_message_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    # When a reply last told the customer it is an automated assistant (messaging.disclosure); None: the next
    # reply does (a new conversation, or one staff have just handed back).
    disclosed_at = models.DateTimeField(null=True, blank=True)
    # The customer's answer to "How did we do?" when the conversation closed (1 to 5): the widget's question,
    # or the rating buttons on WhatsApp, Messenger and Instagram (Agent.ask_channel_rating).
    csat_score = models.PositiveSmallIntegerField(null=True, blank=True)
    # When "How did we do?" reached the customer's widget (on closing, or at their next visit when no widget
    # was open then), or the rating question was queued on a messaging channel: asked once.
    csat_asked_at = models.DateTimeField(null=True, blank=True)
    # Opened by the admin's playground: answered with the agent's draft settings, left out of analytics.
    preview = models.BooleanField(default=False)
    csat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["business", "-updated_at"], name="conversation_recent")]
        constraints = [
            models.CheckConstraint(
                condition=Q(csat_score__isnull=True) | Q(csat_score__gte=1, csat_score__lte=5),
                name="conversation_csat_score_1_to_5",
            )
        ]

    def __str__(self) -> str:
        return f"Conversation {self.pk} ({self.channel}, {self.state})"

    @property
    def group_name(self) -> str:
        return conversation_group(self.pk)


# The longest comment a customer may leave with a rating (the widget's ``feedback`` frame).
RATING_COMMENT_MAX_CHARS = 500


def conversation_group(conversation_id: int) -> str:
    """The Channels group that carries a conversation's live events (its sockets, the inbox's)."""
    return f"conv.{conversation_id}"


def visitor_group(business_id: int, visitor_id: str) -> str:
    """The Channels group of a widget visitor's open chat sockets (all its tabs): told of a message of theirs
    stored outside a socket (a photo uploaded over HTTP), so that each joins its conversation. Visitor ids are
    ours (``messaging.visitors``: hex), valid in a group name."""
    return f"visitor.{business_id}.{visitor_id}"


class Message(models.Model):
    class Role(models.TextChoices):
        CUSTOMER = "customer", "Customer"
        AGENT = "agent", "Agent"
        STAFF = "staff", "Staff"

    class Status(models.TextChoices):
        # customer messages: received -> answered (or skipped when a human has the conversation); a photo or
        # voice note is ``preparing`` until it has been downloaded and read (messaging.media_reading), and the
        # conversation's reply waits for it, so that a burst with media is answered once
        PREPARING = "preparing", "Reading media"
        RECEIVED = "received", "Received"
        ANSWERED = "answered", "Answered"
        SKIPPED = "skipped", "Skipped"
        # agent and staff messages
        STREAMING = "streaming", "Streaming"
        DONE = "done", "Done"
        CUT = "cut", "Cut off"
        FAILED = "failed", "Failed"

    class Delivery(models.TextChoices):
        # outbound delivery on messaging channels; only ever moves forward (failed is final)
        NONE = "", "-"
        QUEUED = "queued", "Queued"
        SENT = "sent", "Sent"
        DELIVERED = "delivered", "Delivered"
        READ = "read", "Read"
        FAILED = "failed", "Failed"
        # A part was sent but Meta's answer never came: the customer may or may not have it (not resent).
        AMBIGUOUS = "ambiguous", "Unconfirmed"

    class Rating(models.TextChoices):
        NONE = "", "-"
        UP = "up", "Thumbs up"
        DOWN = "down", "Thumbs down"

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="messages")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    role = models.CharField(max_length=10, choices=Role.choices)
    text = models.TextField(blank=True)
    # Agent replies: the AI disclosure shown before the text (messaging.disclosure), kept apart from it so that
    # the conversation's context, the checks and the analytics read the answer alone.
    disclosure = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices)
    # The platform's id (WhatsApp wamid, Messenger mid): Meta redelivers for days, this de-duplicates.
    channel_message_id = models.CharField(max_length=255, blank=True)
    # The widget's own id for a message it sent, so that a resend after a reconnect is not stored twice.
    client_message_id = models.CharField(max_length=64, blank=True)
    # For agent replies: the customer message that triggered the reply (the reply task is keyed by it).
    reply_to = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reply"
    )
    # Reply claim: set by a conditional update; a stale lease can be taken over after a worker crash.
    claimed_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=100, blank=True)
    # Customer messages: the row is the reply's outbox (written with the message). Past this time, a message
    # still received with a free or stale claim is queued again by the sweeper (messaging.replies.policy).
    reply_due_at = models.DateTimeField(null=True, blank=True)
    citations = models.JSONField(default=list, blank=True)
    cards = models.JSONField(default=list, blank=True)
    grounding = models.JSONField(default=dict, blank=True)
    usage = models.JSONField(default=dict, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    delivery = models.CharField(max_length=10, choices=Delivery.choices, default=Delivery.NONE, blank=True)
    error = models.TextField(blank=True)
    # Agent replies: the customer's thumbs up or down (the widget's buttons, services.message_rate); one per
    # reply, changeable, the latest counts.
    rating = models.CharField(max_length=4, choices=Rating.choices, blank=True)
    # Agent messages on WhatsApp, Messenger and Instagram that ask the customer to rate the conversation: sent
    # with reply buttons or quick replies (messaging.meta.rating), whose tap stores the conversation's CSAT.
    asks_rating = models.BooleanField(default=False)
    rating_comment = models.CharField(max_length=RATING_COMMENT_MAX_CHARS, blank=True)
    rated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "channel_message_id"],
                condition=~Q(channel_message_id=""),
                name="message_unique_channel_id",
            ),
            models.UniqueConstraint(
                fields=["conversation", "client_message_id"],
                condition=~Q(client_message_id=""),
                name="message_unique_client_id",
            ),
        ]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="message_thread"),
            # The sweeper's scan: only the customer messages still waiting for a reply.
            models.Index(
                fields=["reply_due_at"],
                condition=Q(role="customer", status="received"),
                name="message_reply_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.text[:40]}"


def media_upload_path(instance: MessageMedia, filename: str) -> str:
    return f"messages/{instance.business_id}/{filename}"


class MessageMedia(models.Model):
    """A photo or voice note a customer sent (messaging.media, messaging.media_reading): where to download it
    from, its bytes in Django storage under the business's folder (never served by URL) until
    MESSAGE_MEDIA_RETENTION_DAYS have passed, and what the agent read in it. After the retention the file is
    deleted and the row keeps what it was (kind, type, size, the description or transcript)."""

    class Kind(models.TextChoices):
        IMAGE = "image", "Photo"
        AUDIO = "audio", "Voice note"

    class State(models.TextChoices):
        PENDING = "pending", "Being read"
        READ = "read", "Read"  # described (a photo) or transcribed (a voice note)
        UNREAD = "unread", "Kept, not read"  # no endpoint could read it, or reading it failed
        REFUSED = "refused", "Refused"  # too large, of another type or not downloadable: no file kept

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="message_media")
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="media")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.IMAGE)
    state = models.CharField(max_length=8, choices=State.choices, default=State.READ)
    # Where the bytes come from until they are downloaded: a WhatsApp media id or a Messenger/Instagram
    # attachment URL ("" for a widget upload, stored at once), and the account whose token reads it.
    source = models.CharField(max_length=2000, blank=True)
    account = models.ForeignKey(
        "ChannelAccount", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Reading claim: set by a conditional update; a stale one is taken over (messaging.media_reading).
    claimed_at = models.DateTimeField(null=True, blank=True)
    file = models.FileField(upload_to=media_upload_path, max_length=500, blank=True)
    content_type = models.CharField(max_length=50, blank=True)
    size = models.PositiveIntegerField(default=0)
    # The words the customer sent with it (a photo's caption): the message's text becomes the question the
    # agent reads, the widget shows these beside the photo.
    caption = models.TextField(blank=True)
    # What the pool saw in it: a photo's description, a voice note's transcript ("" when unread).
    description = models.TextField(blank=True)
    # Why it was refused or left unread, for staff and logs.
    error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        indexes = [
            # The sweeper's scan: media still being read.
            models.Index(fields=["created_at"], condition=Q(state="pending"), name="message_media_pending"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.content_type} ({self.size} bytes, {self.state})"


# --- Messaging channels (WhatsApp, Messenger, Instagram): owned by messaging.meta ------------------------------


class ChannelAccount(models.Model):
    """A business's connection to one Meta messaging account, and how webhooks find the business.

    Routing ids are plain, unique among active accounts of a kind: a delivery for a phone number id (or page
    id, or Instagram account id) reaches exactly one business. Secrets are encrypted at rest.
    """

    class Kind(models.TextChoices):
        WHATSAPP = "whatsapp", "WhatsApp"
        MESSENGER = "messenger", "Messenger"
        INSTAGRAM = "instagram", "Instagram"

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="channel_accounts")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=100, blank=True)
    active = models.BooleanField(default=True)
    # WhatsApp: the WABA (entry.id of deliveries) and the business phone number (metadata.phone_number_id).
    waba_id = models.CharField(max_length=64, blank=True)
    phone_number_id = models.CharField(max_length=64, blank=True)
    display_phone_number = models.CharField(max_length=32, blank=True)
    # Messenger: the Page (entry.id). Instagram: the professional account (entry.id) and, with Facebook
    # Login, the Page whose token sends for it.
    page_id = models.CharField(max_length=64, blank=True)
    instagram_account_id = models.CharField(max_length=64, blank=True)
    access_token = EncryptedTextField(blank=True)
    # Empty: the deployment's META_APP_SECRET verifies this account's deliveries.
    app_secret = EncryptedTextField(blank=True)
    verify_token = models.CharField(max_length=200, blank=True)
    # WhatsApp template sent instead of free text once the 24-hour window has closed (empty: send nothing).
    template_name = models.CharField(max_length=512, blank=True)
    template_language = models.CharField(max_length=16, blank=True, default="en_US")
    # WhatsApp: the Meta commerce catalog connected to the WABA, whose retailer ids are the business's SKUs
    # (catalog items' external ids): product replies go out as product / product_list messages
    # (messaging.meta.products). Empty: list and cta_url messages.
    commerce_catalog_id = models.CharField(max_length=64, blank=True)
    last_delivery_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "phone_number_id"],
                condition=Q(active=True) & ~Q(phone_number_id=""),
                name="channel_account_unique_phone",
            ),
            models.UniqueConstraint(
                fields=["kind", "page_id"],
                condition=Q(active=True) & ~Q(page_id=""),
                name="channel_account_unique_page",
            ),
            models.UniqueConstraint(
                fields=["kind", "instagram_account_id"],
                condition=Q(active=True) & ~Q(instagram_account_id=""),
                name="channel_account_unique_instagram",
            ),
        ]
        indexes = [models.Index(fields=["business", "kind"], name="channel_account_business")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.routing_id}"

    @property
    def routing_id(self) -> str:
        """The id that webhook deliveries carry for this account."""
        if self.kind == self.Kind.WHATSAPP:
            return self.phone_number_id
        if self.kind == self.Kind.MESSENGER:
            return self.page_id
        return self.instagram_account_id


class WebhookDelivery(models.Model):
    """One signed POST from Meta, stored before it is acknowledged; a task parses it later.

    The raw bytes are kept (not parsed JSON): they are what was signed, and re-processing needs nothing else.
    """

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        PROCESSING = "processing", "Processing"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    # Set once processing knows it (a delivery may in theory cover several businesses: then the first).
    business = models.ForeignKey(
        Business, null=True, blank=True, on_delete=models.SET_NULL, related_name="webhook_deliveries"
    )
    platform = models.CharField(
        max_length=16
    )  # the endpoint it arrived on: whatsapp, messenger, instagram, meta
    body = models.BinaryField()
    signature = models.CharField(max_length=100)
    # Empty: signed with the deployment's app secret. Else the accounts whose own secret verified it: only
    # those may be routed to (one tenant's secret cannot forge deliveries for another).
    verified_accounts = models.JSONField(default=list, blank=True)
    state = models.CharField(max_length=12, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    summary = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    # SHA-256 of the raw body and who signed it (meta.intake.delivery_digest), unique per endpoint: a replay is
    # acknowledged and not stored again. Empty on rows stored before it existed.
    body_sha256 = models.CharField(max_length=64, blank=True, default="")
    # The body is emptied WEBHOOK_BODY_RETENTION_DAYS after the delivery was processed (it holds customers'
    # messages); the row, its digest and its summary stay.
    body_purged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["state", "received_at"], name="webhook_delivery_state"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["platform", "body_sha256"],
                condition=~Q(body_sha256=""),
                name="webhook_delivery_unique_body",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.platform} delivery {self.pk} ({self.state})"


class OutboundPart(models.Model):
    """One Graph API send of an outgoing message (a long reply is several; a card is one each).

    Recorded before it is sent, so that a redelivered send task never sends a part twice, and so that status
    webhooks, which name the part's platform id, find their message. ``pending`` -> ``sending`` (claimed: the
    request may be on the wire) -> ``sent``, ``failed``, or ``ambiguous`` (written, but Meta's answer never
    came, or the sending worker died: it may have reached the customer, so it is never sent again).
    """

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        AMBIGUOUS = "ambiguous", "Ambiguous"

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="outbound_parts")
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="outbound_parts")
    index = models.PositiveSmallIntegerField()
    channel = models.CharField(max_length=16, choices=Channel.choices)
    body = models.JSONField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    channel_message_id = models.CharField(max_length=255, blank=True)
    delivery = models.CharField(
        max_length=10, choices=Message.Delivery.choices, default=Message.Delivery.NONE, blank=True
    )
    error = models.TextField(blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # The worker that claimed it (host:pid, messaging.replies.claim.worker_id): a part whose worker on this
    # host is gone is known abandoned at once, without waiting for the claim's lease.
    claimed_by = models.CharField(max_length=100, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "index"], name="outbound_part_unique_index"),
            models.UniqueConstraint(
                fields=["channel", "channel_message_id"],
                condition=~Q(channel_message_id=""),
                name="outbound_part_unique_channel_id",
            ),
        ]

    def __str__(self) -> str:
        return f"part {self.index} of message {self.message_id} ({self.state})"


class Order(models.Model):
    """A cart a customer sent from a catalog (a WhatsApp ``order`` message), checked against our catalog when
    it arrived: the total is ours, never the cart's (messaging.meta.orders)."""

    class Next(models.TextChoices):
        STAFF = "staff", "Handed to staff"
        CHECKOUT = "checkout", "Checkout link sent"

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="orders")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="orders")
    # The customer's order message (its platform id de-duplicates redeliveries) and our acknowledgement.
    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="order")
    acknowledgement = models.OneToOneField(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="acknowledged_order"
    )
    catalog_id = models.CharField(max_length=64, blank=True)
    note = models.TextField(blank=True)  # what the customer wrote with the cart
    # Per currency: {"EUR": "537.90"} (the lines we can sell, at our prices as of the order).
    totals = models.JSONField(default=dict, blank=True)
    next_step = models.CharField(max_length=10, choices=Next.choices)
    checkout_url = models.URLField(max_length=2000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["business", "-created_at"], name="order_recent")]

    def __str__(self) -> str:
        return f"Order {self.pk} ({self.business_id})"


class OrderLine(models.Model):
    """One line of an order: what the cart said, and what our catalog said when the order arrived."""

    class Problem(models.TextChoices):
        NONE = "", "-"
        UNKNOWN_ITEM = "unknown_item", "Not in the catalog"
        OUT_OF_STOCK = "out_of_stock", "Out of stock"
        PRICE_CHANGED = "price_changed", "Price changed"
        NO_PRICE = "no_price", "No price in the catalog"

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="+")
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveSmallIntegerField()
    product_retailer_id = models.CharField(max_length=200)
    item = models.ForeignKey(Item, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    title = models.CharField(max_length=500, blank=True)
    quantity = models.PositiveIntegerField()
    # As the customer's app showed it (may be stale).
    cart_price = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    cart_currency = models.CharField(max_length=3, blank=True)
    # Ours when the order arrived (the sale price when there is one); None: not sold (see problem).
    price = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    problem = models.CharField(max_length=16, choices=Problem.choices, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["order", "position"], name="order_line_unique_position")
        ]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.product_retailer_id}"
