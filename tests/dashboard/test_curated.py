"""The curated answers pages: list and search, create (also from an inbox reply), edit, delete, CSV import and
export, each inside one business."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from agents.models import CuratedAnswer, CuratedPhrasing
from messaging.models import Channel, Conversation, Message
from tests.dashboard.conftest import Tenant, make_curated_answer

pytestmark = pytest.mark.django_db


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _base(tenant: Tenant) -> str:
    return f"/app/{tenant.business.slug}/answers/"


def _reply(tenant: Tenant, text: str = "We do not ship to Switzerland.") -> Message:
    conversation = Conversation.objects.get(pk=tenant.objects["conversation"])
    Message.objects.create(
        business=tenant.business,
        conversation=conversation,
        channel=Channel.WIDGET,
        role=Message.Role.CUSTOMER,
        text="Do you ship to Switzerland?",
        status=Message.Status.ANSWERED,
    )
    return Message.objects.create(
        business=tenant.business,
        conversation=conversation,
        channel=Channel.WIDGET,
        role=Message.Role.AGENT,
        text=text,
        status=Message.Status.DONE,
    )


def test_the_list_shows_the_businesss_answers_and_searches_them(tenant_a: Tenant, tenant_b: Tenant) -> None:
    make_curated_answer(tenant_a.business, question="Do you offer gift wrapping?")
    client = _client(tenant_a.staff)
    listed = client.get(_base(tenant_a))
    assert listed.status_code == 200
    assert [c.question for c in listed.context["page"]] == [
        "Do you offer gift wrapping?",
        "Do you ship abroad?",
    ]
    found = client.get(_base(tenant_a) + "?q=gift")
    assert [c.question for c in found.context["page"]] == ["Do you offer gift wrapping?"]
    assert "Curated answers" in found.content.decode()
    # B's answer (same question) is never listed for A.
    b_answer = CuratedAnswer.objects.get(business=tenant_b.business)
    assert b_answer.pk not in [c.pk for c in listed.context["page"]]


def test_create_edit_and_delete(tenant_a: Tenant) -> None:
    client = _client(tenant_a.staff)
    response = client.post(
        _base(tenant_a) + "new/",
        {
            "question": "Do you offer gift wrapping?",
            "paraphrases": "Can you wrap it as a present?\n\n  Is gift wrap available? ",
            "answer": "Yes: 3.00 EUR per parcel.",
            "is_active": "on",
        },
    )
    assert response.status_code == 302 and response["Location"] == _base(tenant_a)
    curated = CuratedAnswer.objects.get(business=tenant_a.business, question="Do you offer gift wrapping?")
    assert curated.paraphrases == ["Can you wrap it as a present?", "Is gift wrap available?"]
    assert curated.created_by == tenant_a.staff and curated.source_message is None and curated.is_active
    assert CuratedPhrasing.objects.filter(curated=curated).count() == 3

    edit = f"{_base(tenant_a)}{curated.pk}/"
    form = client.get(edit).context["form"]
    assert form.initial["paraphrases"] == "Can you wrap it as a present?\nIs gift wrap available?"
    response = client.post(
        edit, {"question": "Do you offer gift wrapping?", "answer": "No, sorry.", "paraphrases": ""}
    )
    assert response.status_code == 302
    curated.refresh_from_db()
    assert (curated.answer, curated.paraphrases, curated.is_active) == ("No, sorry.", [], False)
    assert CuratedPhrasing.objects.filter(curated=curated).count() == 1

    assert client.get(f"{edit}delete/").status_code == 405
    assert client.post(f"{edit}delete/").status_code == 302
    assert not CuratedAnswer.objects.filter(pk=curated.pk).exists()


def test_bad_input_is_shown_on_the_form(tenant_a: Tenant) -> None:
    client = _client(tenant_a.owner)
    before = CuratedAnswer.objects.count()
    response = client.post(_base(tenant_a) + "new/", {"question": "   ", "answer": "Yes."})
    assert response.status_code == 400
    assert response.context["form"].errors["question"] == ["This field is required."]
    response = client.post(
        _base(tenant_a) + "new/", {"question": "Q?", "answer": "A.", "paraphrases": "x" * 501}
    )
    assert response.status_code == 400
    assert response.context["form"].non_field_errors() == ["A paraphrase is longer than 500 characters."]
    assert CuratedAnswer.objects.count() == before


def test_write_the_right_answer_from_an_inbox_reply(tenant_a: Tenant) -> None:
    reply = _reply(tenant_a)
    client = _client(tenant_a.staff)
    thread = client.get(f"/app/{tenant_a.business.slug}/inbox/{reply.conversation_id}/").content.decode()
    link = f"{_base(tenant_a)}new/?message={reply.pk}"
    assert f'href="{link}">Write the right answer</a>' in thread

    form = client.get(link).context["form"]
    assert form.initial["question"] == "Do you ship to Switzerland?"
    assert form.initial["answer"] == "We do not ship to Switzerland."
    response = client.post(
        _base(tenant_a) + "new/",
        {
            "message": str(reply.pk),
            "question": "Do you ship to Switzerland?",
            "answer": "Yes, with DHL: 9.90 CHF.",
            "is_active": "on",
        },
    )
    assert response.status_code == 302
    curated = CuratedAnswer.objects.get(business=tenant_a.business, question="Do you ship to Switzerland?")
    assert curated.source_message_id == reply.pk and curated.answer == "Yes, with DHL: 9.90 CHF."


def test_another_businesss_reply_fills_nothing_and_is_never_linked(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    b_reply = _reply(tenant_b, "B's secret answer")
    client = _client(tenant_a.owner)
    response = client.get(f"{_base(tenant_a)}new/?message={b_reply.pk}")
    assert response.status_code == 200
    assert response.context["form"].initial["answer"] == "" and response.context["source"] is None
    assert "B&#x27;s secret answer" not in response.content.decode()
    before = CuratedAnswer.objects.count()
    response = client.post(
        _base(tenant_a) + "new/",
        {"message": str(b_reply.pk), "question": "Q?", "answer": "A.", "is_active": "on"},
    )
    assert response.status_code == 400
    assert response.context["form"].non_field_errors() == [
        "The reply to correct is not one of this business's messages."
    ]
    assert CuratedAnswer.objects.count() == before


def test_query_string_fills_the_form(tenant_a: Tenant) -> None:
    response = _client(tenant_a.owner).get(_base(tenant_a) + "new/?question=Do+you+repair+bikes%3F")
    assert response.context["form"].initial["question"] == "Do you repair bikes?"


def test_import_and_export(tenant_a: Tenant, tenant_b: Tenant) -> None:
    client = _client(tenant_a.staff)
    data = (
        b"question,answer,paraphrases\n"
        b"Do you offer gift wrapping?,Yes: 3.00 EUR per parcel.,Can you wrap it?|Gift wrap?\n"
        b"Do you ship abroad?,To all of Europe and Switzerland.,\n"
        b",No question,\n"
    )
    response = client.post(
        _base(tenant_a) + "import/",
        {"file": SimpleUploadedFile("answers.csv", data, "text/csv")},
        follow=True,
    )
    shown = [str(m) for m in response.context["messages"]]
    assert shown == ["Imported: 1 new, 1 updated.", "Line 4: The question is empty."]
    assert CuratedAnswer.objects.get(business=tenant_a.business, question="Do you ship abroad?").answer == (
        "To all of Europe and Switzerland."
    )
    # B's answer of the same question is untouched.
    assert CuratedAnswer.objects.get(business=tenant_b.business).answer == "Yes, to all of Europe."

    exported = client.get(_base(tenant_a) + "export.csv")
    assert exported.status_code == 200 and exported["Content-Type"] == "text/csv; charset=utf-8"
    assert exported.content.decode().splitlines() == [
        "question,answer,paraphrases",
        "Do you ship abroad?,To all of Europe and Switzerland.,",
        "Do you offer gift wrapping?,Yes: 3.00 EUR per parcel.,Can you wrap it?|Gift wrap?",
    ]


def test_an_unreadable_import_is_refused_with_its_reason(tenant_a: Tenant) -> None:
    client = _client(tenant_a.owner)
    before = CuratedAnswer.objects.count()
    response = client.post(
        _base(tenant_a) + "import/", {"file": SimpleUploadedFile("a.csv", b"title,text\nx,y\n", "text/csv")}
    )
    assert response.status_code == 400
    assert response.context["import_form"].errors["file"] == [
        "The file has no question or answer column (expected: question, answer, paraphrases)."
    ]
    assert CuratedAnswer.objects.count() == before


def test_another_businesss_answers_cannot_be_opened_changed_deleted_or_exported(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    CuratedAnswer.objects.filter(pk=tenant_b.objects["curated_answer"]).update(answer="Only B says this.")
    b_answer = CuratedAnswer.objects.get(pk=tenant_b.objects["curated_answer"])
    client = _client(tenant_a.owner)
    edit = f"{_base(tenant_a)}{b_answer.pk}/"
    assert client.get(edit).status_code == 404
    assert client.post(edit, {"question": "stolen", "answer": "stolen", "is_active": "on"}).status_code == 404
    assert client.post(f"{edit}delete/").status_code == 404
    assert client.get(f"/app/{tenant_b.business.slug}/answers/export.csv").status_code == 404
    assert "Only B says this." not in client.get(_base(tenant_a) + "export.csv").content.decode()
    b_answer.refresh_from_db()
    assert (b_answer.question, b_answer.answer) == ("Do you ship abroad?", "Only B says this.")
