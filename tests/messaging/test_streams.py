"""messaging.streams against the real Redis: the resume log and the worker loop's cancel watch."""

from __future__ import annotations

import asyncio

from channels.layers import get_channel_layer
from django.test import override_settings

from common.redis import async_client
from messaging import streams


async def test_an_entry_logged_with_its_event_reaches_the_groups_members_as_a_group_send_would() -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("conv.9", channel)
    try:
        event = {"type": "reply.delta", "message_id": 9, "seq": 1, "text": "The ", "reset": False}
        await streams.log_append(9, {"seq": 1, "text": "The ", "reset": False}, then_send=("conv.9", event))
        assert await asyncio.wait_for(layer.receive(channel), timeout=2) == event
        assert await streams.log_read(9) == [{"seq": 1, "text": "The ", "reset": False}]
    finally:
        await layer.group_discard("conv.9", channel)


async def test_the_log_reads_back_what_followed_a_sequence_number() -> None:
    for seq, text in enumerate(["The ", "stove ", "is 39.90 EUR."], start=1):
        await streams.log_append(7, {"seq": seq, "text": text, "reset": False})
    assert [entry["text"] for entry in await streams.log_read(7, 1)] == ["stove ", "is 39.90 EUR."]
    assert await streams.log_last_seq(7) == 3
    assert await streams.log_last_seq(8) == 0


async def test_a_stop_reaches_the_watched_reply_only_and_one_asked_before_is_left_in_its_key() -> None:
    watch = streams.cancel_watch()
    assert streams.cancel_watch() is watch  # one subscription per event loop
    try:
        stopped, other = await watch.watch(101), await watch.watch(102)
        # Pub/sub is server-wide: a deployment on another Redis database (another prefix) stops nothing here.
        with override_settings(PUBSUB_PREFIX="bizagent-elsewhere"):
            elsewhere = streams.cancel_channel(101)
        assert elsewhere != streams.cancel_channel(101)
        await async_client().publish(elsewhere, "stop")
        await asyncio.sleep(0.1)
        assert not stopped.is_set()
        await streams.cancel_request(101)
        await asyncio.wait_for(stopped.wait(), timeout=2)
        await asyncio.sleep(0.05)
        assert not other.is_set()
        watch.unwatch(101, stopped)
        watch.unwatch(102, other)
        assert watch.waiters == {}
        # Asked before the reply was watched: the watch does not replay it, the key tells (the reply task
        # checks it beside its stream).
        await streams.cancel_request(103)
        await asyncio.sleep(0.2)  # the subscription has heard it, with nobody waiting
        late = await watch.watch(103)
        await asyncio.sleep(0.05)
        assert not late.is_set()
        assert await streams.cancel_requested(103)
        assert not await streams.cancel_requested(104)
    finally:
        await streams.close_cancel_watch()
