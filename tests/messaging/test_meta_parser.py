"""The payload parser on its own (pure): shapes the processing tests don't reach, and nothing crashes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from messaging.meta import parser
from tests.fixtures.meta import page_delivery, page_event


def test_messenger_postback_attachments_and_unsupported() -> None:
    payload = page_delivery(
        "page",
        [
            (
                "PAGE_1",
                [
                    page_event(
                        "PAGE_1",
                        "PSID_1",
                        postback={"title": "Opening hours", "payload": "HOURS", "mid": "m.pb"},
                    ),
                    page_event(
                        "PAGE_1",
                        "PSID_1",
                        mid="m.loc",
                        attachments=[
                            {"type": "location", "payload": {"coordinates": {"lat": 52.52, "long": 13.405}}}
                        ],
                    ),
                    page_event(
                        "PAGE_1",
                        "PSID_1",
                        mid="m.img",
                        attachments=[{"type": "image", "payload": {"url": "https://x"}}],
                    ),
                    page_event("PAGE_1", "PSID_1", mid="m.uns", is_unsupported=True),
                    page_event("PAGE_1", "PSID_1", mid="m.del", is_deleted=True),
                    page_event("PAGE_1", "PSID_1", optin={"ref": "x"}),
                ],
            )
        ],
    )
    result = parser.parse(payload)
    assert [(m.message_id, m.kind, m.text, m.supported) for m in result.messages] == [
        ("m.pb", "postback", "Opening hours", True),
        ("m.loc", "location", "My location: 52.52, 13.405", True),
        ("m.img", "image", "", True),
        ("m.uns", "unsupported", "", False),
    ]
    # A photo carries its attachment URL, downloaded by messaging.meta.media.
    assert [m.media_url for m in result.messages if m.kind == "image"] == ["https://x"]
    assert result.ignored == ["messenger deleted", "messenger event optin"]
    assert result.messages[0].timestamp == dt.datetime(2016, 3, 23, 0, 25, 52, 478000, tzinfo=dt.UTC)


def test_instagram_seen_names_the_message_and_messenger_read_is_a_watermark() -> None:
    seen = parser.parse(
        page_delivery("instagram", [("IG_1", [page_event("IG_1", "IGSID", read={"mid": "ig.out.1"})])])
    )
    assert [(s.message_id, s.status) for s in seen.statuses] == [("ig.out.1", "read")]
    read = parser.parse(
        page_delivery("page", [("PAGE_1", [page_event("PAGE_1", "PSID", read={"watermark": 1458668856253})])])
    )
    assert read.reads == [
        parser.ReadWatermark(
            "messenger", "PAGE_1", "PSID", dt.datetime(2016, 3, 22, 17, 47, 36, 253000, tzinfo=dt.UTC)
        )
    ]


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        "text",
        {"object": "whatsapp_business_account"},
        {"object": "whatsapp_business_account", "entry": [None, 1, {"changes": [None, {"value": []}]}]},
        {
            "object": "whatsapp_business_account",
            "entry": [{"changes": [{"value": {"messages": [{"type": "text"}]}}]}],
        },
        {
            "object": "whatsapp_business_account",
            "entry": [{"changes": [{"value": {"statuses": [{"id": "x"}]}}]}],
        },
        {"object": "page", "entry": [{"messaging": [None, {"message": "not a dict"}, {"sender": {}}]}]},
        {"object": "user", "entry": [{"id": "1", "changes": [{"field": "feed"}]}]},
        {
            "object": "whatsapp_business_account",
            "entry": [{"changes": [{"field": "message_template_status_update", "value": {}}]}],
        },
    ],
)
def test_malformed_or_foreign_payloads_yield_no_messages_and_never_raise(payload: Any) -> None:
    result = parser.parse(payload, platform="whatsapp")
    assert result.messages == []
    assert result.statuses == []


def test_whatsapp_timestamps_are_seconds_and_bad_ones_fall_back_to_now() -> None:
    message = {"from": "1", "id": "w.1", "timestamp": "1749416383", "type": "text", "text": {"body": "hi"}}
    bad = {**message, "id": "w.2", "timestamp": "soon"}
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "changes": [
                    {
                        "field": "messages",
                        "value": {"metadata": {"phone_number_id": "P"}, "messages": [message, bad]},
                    }
                ]
            }
        ],
    }
    first, second = parser.parse(payload).messages
    assert first.timestamp == dt.datetime(2025, 6, 8, 20, 59, 43, tzinfo=dt.UTC)
    assert abs((second.timestamp - dt.datetime.now(tz=dt.UTC)).total_seconds()) < 5
    assert (first.account_id, first.sender_id, first.sender_name) == ("P", "1", "")
