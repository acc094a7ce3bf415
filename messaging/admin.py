"""Django admin for conversations (operators; the business-facing inbox is the dashboard)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from messaging.models import Contact, Conversation, Message
from messaging.services import conversation_hand_back, conversation_handoff


class MessageInline(admin.TabularInline[Message, Conversation]):
    model = Message
    extra = 0
    fields = ["created_at", "role", "status", "text", "delivery"]
    readonly_fields = ["created_at", "role", "status", "text", "delivery"]
    ordering = ["created_at"]
    show_change_link = True
    can_delete = False


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin[Contact]):
    list_display = ["__str__", "business", "channel", "external_id", "created_at"]
    list_filter = ["channel", "business"]
    search_fields = ["external_id", "name"]


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin[Conversation]):
    list_display = ["pk", "business", "contact", "channel", "state", "last_customer_message_at", "updated_at"]
    list_filter = ["state", "channel", "business"]
    readonly_fields = [
        "business",
        "contact",
        "channel",
        "state",
        "handoff_reason",
        "last_customer_message_at",
    ]
    inlines = [MessageInline]
    actions = ["hand_to_staff", "hand_back_to_agent"]

    @admin.action(description="Hand over to staff (the agent stays silent)")
    def hand_to_staff(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        for conversation in queryset.select_related("business"):
            conversation_handoff(
                business=conversation.business,
                conversation_id=conversation.pk,
                reason="handed over in the admin",
            )

    @admin.action(description="Hand back to the agent")
    def hand_back_to_agent(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        for conversation in queryset.select_related("business"):
            conversation_hand_back(business=conversation.business, conversation_id=conversation.pk)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin[Message]):
    list_display = ["pk", "business", "conversation", "role", "status", "short_text", "created_at"]
    list_filter = ["role", "status", "channel", "business"]
    search_fields = ["text", "channel_message_id", "client_message_id"]
    readonly_fields = [f.name for f in Message._meta.fields]

    @admin.display(description="text")
    def short_text(self, obj: Message) -> str:
        return obj.text[:80]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
