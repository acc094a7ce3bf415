"""Closing a conversation from the inbox, and the satisfaction figures it leads to."""

from __future__ import annotations

import pytest
from django.test import Client

from dashboard import analytics_selectors
from messaging.models import Conversation
from tests.dashboard.conftest import Tenant, make_conversation

pytestmark = pytest.mark.django_db


def test_staff_close_a_conversation_from_the_inbox(tenant_a: Tenant) -> None:
    conversation = make_conversation(tenant_a.business, text="Where is my order?")
    slug = tenant_a.business.slug
    client = Client()
    client.force_login(tenant_a.staff)
    page = client.get(f"/app/{slug}/inbox/{conversation.pk}/").content.decode()
    assert 'id="close-conversation"' in page
    response = client.post(f"/app/{slug}/inbox/{conversation.pk}/close/", follow=True)
    assert response.status_code == 200
    conversation.refresh_from_db()
    assert conversation.state == Conversation.State.CLOSED and conversation.closed_at is not None
    html = response.content.decode()
    assert "Closed. The customer was asked how we did." in html
    assert "The customer has not rated it." in html
    assert 'id="close-conversation"' not in html

    Conversation.objects.filter(pk=conversation.pk).update(csat_score=4)
    html = client.get(f"/app/{slug}/inbox/{conversation.pk}/").content.decode()
    assert "The customer rated it 4/5." in html


def test_business_b_cannot_close_a_conversation_of_a(tenant_a: Tenant, tenant_b: Tenant) -> None:
    conversation = make_conversation(tenant_a.business)
    client = Client()
    client.force_login(tenant_b.owner)
    for slug in (tenant_a.business.slug, tenant_b.business.slug):
        assert client.post(f"/app/{slug}/inbox/{conversation.pk}/close/").status_code == 404
    conversation.refresh_from_db()
    assert (conversation.state, conversation.closed_at) == (Conversation.State.BOT, None)


def test_satisfaction_in_the_analytics(tenant_a: Tenant, tenant_b: Tenant) -> None:
    for business, scores in ((tenant_a.business, (4, 5)), (tenant_b.business, (1,))):
        for score in scores:
            conversation = make_conversation(business)
            Conversation.objects.filter(pk=conversation.pk).update(state="closed", csat_score=score)
    a = analytics_selectors.analytics(tenant_a.business, days=7)
    assert (a.csat_average, a.csat_answers) == (4.5, 2)
    client = Client()
    client.force_login(tenant_a.owner)
    html = client.get(f"/app/{tenant_a.business.slug}/analytics/").content.decode()
    assert (
        '<span class="num" id="kpi-csat">4.5/5</span><span>satisfaction when closed (2 answers)</span>'
        in html
    )
