"""The stream parser and the client's handling of every shape a server sends (PROTOCOLS.md 4.2)."""

from __future__ import annotations

import contextlib
import json

import pytest

from inference.chat import complete_chat, stream_chat
from inference.sse import StreamParser, error_message
from inference.types import (
    ChatRequest,
    PoolUnavailable,
    RequestRejected,
    StreamCut,
    StreamEnd,
    TextDelta,
    ToolCall,
    ToolCalls,
    Usage,
)
from tests.inference_server import InferenceServer


def ask(text: str = "hi", **kwargs: object) -> ChatRequest:
    return ChatRequest(business_id=0, messages=[{"role": "user", "content": text}], **kwargs)  # type: ignore[arg-type]


async def collect(request: ChatRequest) -> list[object]:
    events: list[object] = []
    async with contextlib.aclosing(stream_chat(request)) as stream:
        async for event in stream:
            events.append(event)
    return events


def texts(events: list[object]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


# --- The parser alone -----------------------------------------------------------------------------------

VLLM_STREAM = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
    b'"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],'
    b'"prompt_token_ids":null,"system_fingerprint":"vllm-x"}\n\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}\n\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":""},"finish_reason":"stop","stop_reason":null}]}\n\n'
    b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":12,"total_tokens":40,"completion_tokens":28}}\n\n'
    b"data: [DONE]\n\n"
)


def test_parser_reads_a_vllm_stream_split_at_every_byte() -> None:
    parser = StreamParser()
    out: list[str] = []
    for i in range(len(VLLM_STREAM)):
        out += parser.feed(VLLM_STREAM[i : i + 1])
    assert out == ["Hel", "lo"]
    assert (parser.done, parser.finish_reason, parser.prompt_tokens, parser.completion_tokens) == (
        True,
        "stop",
        12,
        28,
    )
    assert parser.error is None


def test_parser_handles_crlf_comments_and_llama_cpp_timings() -> None:
    stream = (
        b": ping\r\n\r\n"
        b'data: {"choices":[{"index":0,"delta":{"content":"A"}}],"usage":null,"timings":{"predicted_ms":3}}\r\n\r\n'
        b"retry: 100\r\nid: 7\r\n\r\n"
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}\r\n\r\n'
        b"data: [DONE]\r\n\r\n"
    )
    parser = StreamParser()
    assert parser.feed(stream) == ["A"]
    assert (parser.done, parser.finish_reason, parser.prompt_tokens, parser.completion_tokens) == (
        True,
        "length",
        3,
        1,
    )


def test_parser_assembles_tool_call_fragments_by_index() -> None:
    parser = StreamParser()
    chunks = [
        {"tool_calls": [{"index": 0, "id": "call-a", "type": "function", "function": {"name": "search"}}]},
        {"tool_calls": [{"index": 1, "id": "call-b", "type": "function", "function": {"name": "stock"}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"q": "blue'}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": '{"sku": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ' mug"}'}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": "[broken"}}]},
    ]
    for delta in chunks:
        parser.feed(f"data: {json.dumps({'choices': [{'index': 0, 'delta': delta}]})}\n\n".encode())
    assert parser.started is True
    assert parser.tool_calls() == (
        ToolCall(
            index=0,
            id="call-a",
            name="search",
            arguments={"q": "blue mug"},
            arguments_text='{"q": "blue mug"}',
        ),
        ToolCall(index=1, id="call-b", name="stock", arguments=None, arguments_text='{"sku": [broken'),
    )


def test_parser_stops_at_an_in_band_error_and_keeps_the_text_before_it() -> None:
    parser = StreamParser()
    out = parser.feed(
        b'data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}\n\n'
        b'data: {"error":{"message":"CUDA out of memory","type":"InternalServerError","code":500}}\n\n'
        b'data: {"choices":[{"index":0,"delta":{"content":"never"}}]}\n\n'
        b"data: [DONE]\n\n"
    )
    assert out == ["ok"]
    assert parser.error == "CUDA out of memory"
    assert parser.done is False


def test_error_message_reads_both_vllm_shapes_and_llama_cpp() -> None:
    assert (
        error_message({"error": {"message": "bad model", "type": "BadRequestError", "code": 400}})
        == "bad model"
    )
    assert error_message({"object": "error", "message": "flat bad", "type": "x", "code": 400}) == "flat bad"
    assert (
        error_message({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}})
        == "Loading model"
    )
    assert error_message({"error": "plain"}) == "plain"


def test_parser_without_done_is_not_done() -> None:
    parser = StreamParser()
    parser.feed(b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}\n\n')
    parser.finish()
    assert parser.done is False
    assert parser.finish_reason == "stop"


# --- Through the client against the test server ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_stream_yields_deltas_usage_and_end_and_sends_what_servers_need(
    pool_server: InferenceServer,
) -> None:
    pool_server.script("The blue mug costs 12.50 EUR.")
    events = await collect(
        ask("price of the mug?", affinity_key="conv-42", max_tokens=64, temperature=0.1, top_p=0.8)
    )
    assert [e.text for e in events if isinstance(e, TextDelta)] == [
        "The ",
        "blue ",
        "mug ",
        "costs ",
        "12.50 ",
        "EUR.",
    ]
    assert events[-2] == Usage(prompt_tokens=4, completion_tokens=6)
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert (end.finish_reason, end.endpoint) == ("stop", pool_server.url)
    assert end.first_token_ms is not None and 0 < end.first_token_ms <= end.total_ms
    sent = pool_server.requests[-1]
    assert sent.body == {
        "model": "test-model",
        "messages": [{"role": "user", "content": "price of the mug?"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 64,
        "temperature": 0.1,
        "top_p": 0.8,
    }
    assert sent.headers["x-session-id"] == "conv-42"
    assert sent.headers["x-session-affinity"] == "conv-42"


@pytest.mark.django_db(transaction=True)
async def test_crlf_pings_unknown_keys_and_garbage_lines_do_not_change_the_reply(
    pool_server: InferenceServer,
) -> None:
    pool_server.script("one two three four")
    pool_server.crlf = True
    pool_server.pings = True
    pool_server.extra_keys = True
    pool_server.fault("garbage", times=1)
    events = await collect(ask())
    assert texts(events) == "one two three four"
    assert events[-2:] == [Usage(1, 4), events[-1]]
    assert isinstance(events[-1], StreamEnd) and events[-1].finish_reason == "stop"


@pytest.mark.parametrize("mode", ["always", "never"])
@pytest.mark.django_db(transaction=True)
async def test_usage_is_accepted_whether_or_not_the_server_sends_it(
    pool_server: InferenceServer, mode: str
) -> None:
    pool_server.usage = mode
    pool_server.script("a b")
    events = await collect(ask())
    usages = [e for e in events if isinstance(e, Usage)]
    assert usages == ([Usage(1, 2)] if mode == "always" else [])
    assert isinstance(events[-1], StreamEnd)


@pytest.mark.django_db(transaction=True)
async def test_tool_calls_arrive_as_one_event_with_parsed_arguments(pool_server: InferenceServer) -> None:
    pool_server.script("")
    pool_server.tool_calls = [
        {"name": "search_catalog", "arguments": '{"query": "blue mug", "max_price": 20}'}
    ]
    events = await collect(ask(tools=[{"type": "function", "function": {"name": "search_catalog"}}]))
    assert events[0] == ToolCalls(
        (
            ToolCall(
                index=0,
                id="call-0",
                name="search_catalog",
                arguments={"query": "blue mug", "max_price": 20},
                arguments_text='{"query": "blue mug", "max_price": 20}',
            ),
        )
    )
    assert isinstance(events[-1], StreamEnd) and events[-1].finish_reason == "tool_calls"
    assert pool_server.requests[-1].body["tools"] == [
        {"type": "function", "function": {"name": "search_catalog"}}
    ]


@pytest.mark.django_db(transaction=True)
async def test_in_band_error_after_tokens_is_a_cut_never_a_complete_answer(
    pool_server: InferenceServer,
) -> None:
    pool_server.script("alpha beta gamma delta")
    pool_server.fault("inband_error", after=2, message="engine died")
    with pytest.raises(StreamCut) as cut:
        await collect(ask())
    assert cut.value.partial_text == "alpha beta "
    assert cut.value.reason == "in-band error: engine died"
    assert cut.value.endpoint == pool_server.url
    assert pool_server.chat_requests == 1


@pytest.mark.parametrize("fault", ["drop", "no_done"])
@pytest.mark.django_db(transaction=True)
async def test_a_stream_that_ends_before_done_is_cut(pool_server: InferenceServer, fault: str) -> None:
    pool_server.script("alpha beta gamma delta")
    pool_server.fault(fault, after=3)
    received: list[str] = []
    with pytest.raises(StreamCut) as cut:
        async with contextlib.aclosing(stream_chat(ask())) as stream:
            async for event in stream:
                assert not isinstance(event, StreamEnd)
                if isinstance(event, TextDelta):
                    received.append(event.text)
    expected = "alpha beta gamma " if fault == "drop" else "alpha beta gamma delta"
    assert "".join(received) == cut.value.partial_text == expected
    assert pool_server.chat_requests == 1


@pytest.mark.parametrize("shape", ["nested", "flat"])
@pytest.mark.django_db(transaction=True)
async def test_a_400_is_rejected_with_the_servers_message_in_both_shapes(
    pool_server: InferenceServer, shape: str
) -> None:
    pool_server.fault("status", status=400, shape=shape, message="max_tokens is too large")
    with pytest.raises(RequestRejected) as rejected:
        await collect(ask())
    assert rejected.value.status == 400
    assert (
        str(rejected.value) == f"{pool_server.url} rejected the request (HTTP 400): max_tokens is too large"
    )
    assert pool_server.chat_requests == 1  # not retried


@pytest.mark.django_db(transaction=True)
async def test_complete_chat_returns_the_whole_reply(pool_server: InferenceServer) -> None:
    pool_server.script("All done here.")
    result = await complete_chat(ask())
    assert (result.text, result.finish_reason, result.endpoint) == ("All done here.", "stop", pool_server.url)
    assert (result.prompt_tokens, result.completion_tokens) == (1, 3)


@pytest.mark.django_db(transaction=True)
async def test_no_endpoint_configured_is_pool_unavailable(llama_pool: object, settings: object) -> None:
    llama_pool()  # type: ignore[operator]
    settings.LLAMA_POOL = ""  # type: ignore[attr-defined]
    settings.LLAMA_EMBEDDED_URL = ""  # type: ignore[attr-defined]
    with pytest.raises(PoolUnavailable, match="no inference endpoint configured"):
        await collect(ask())


@pytest.mark.django_db(transaction=True)
async def test_silence_between_tokens_past_the_idle_timeout_cuts_the_reply(
    pool_server: InferenceServer, settings: object
) -> None:
    settings.LLAMA_IDLE_TIMEOUT = 0.3  # type: ignore[attr-defined]
    pool_server.script("one two three")
    pool_server.fault("hang", after=2)
    with pytest.raises(StreamCut) as cut:
        await collect(ask())
    assert (cut.value.partial_text, cut.value.reason) == (
        "one two ",
        "no token for 0.3 s (LLAMA_IDLE_TIMEOUT)",
    )
    assert pool_server.wait_for(lambda: pool_server.aborted_streams == 1, 1)


@pytest.mark.django_db(transaction=True)
def test_each_event_loop_gets_its_own_connections(pool_server: InferenceServer) -> None:
    import asyncio

    from inference import transport

    async def once() -> object:
        await collect(ask())
        return transport._clients[asyncio.get_running_loop()]

    loops: list[asyncio.AbstractEventLoop] = []

    async def once_on_this_loop() -> object:
        loops.append(asyncio.get_running_loop())
        return await once()

    first = asyncio.run(once_on_this_loop())  # like async_to_sync in a Celery task: a fresh loop each time
    second = asyncio.run(once_on_this_loop())
    assert first is not second
    # The first loop's client was dropped when the second loop asked for one (clients of loops that other
    # tests left open are none of this test's business).
    assert loops[0] not in transport._clients
    assert loops[1] in transport._clients and loops[1].is_closed()
