"""An OpenAI-compatible inference server for tests and benchmarks: real HTTP on 127.0.0.1.

It streams a scripted (or echoed) reply at a set token rate, serves ``/v1/models``, ``/health`` and
deterministic ``/v1/embeddings``, and injects faults on demand. Written on raw asyncio streams rather than a
framework so that it can misbehave exactly: drop the connection mid-chunk, hang, send garbage.

In a test (one thread per server, its own event loop)::

    server = InferenceServer(reply="Hello there.", token_delay=0.01).start()
    server.url                        # http://127.0.0.1:<port>
    server.script("The blue mug costs 12.50 EUR.")   # every following reply
    server.script_queue(["first reply", "second reply"])  # then back to the scripted one
    server.echo = True                # reply with the last user message
    server.image_reply = "A red enamel mug."  # the reply to a request with an image_url content part
    server.transcript = "How much is the red mug?"  # what /v1/audio/transcriptions hears in any audio
    server.transcriptions[-1]  # (model, filename, content type, bytes) of each transcription request
    server.fault("status", status=500, times=1)      # the next chat request gets HTTP 500
    server.clear_faults()
    server.chat_requests, server.requests[-1].body, server.requests[-1].headers
    server.wait_for(lambda: server.active_streams == 0)
    server.stop()

Faults (``server.fault(kind, times=None, **params)``; ``times`` = how many chat requests it affects,
None = until cleared):

- ``slow_first_token`` (``delay`` s before the first content token)
- ``status`` (``status``: 429/500/..., ``shape``: ``nested`` ``{"error": {...}}`` or ``flat``
  ``{"object": "error", ...}``; 429 carries ``Retry-After: 1``)
- ``loading``: 503 ``Loading model`` on chat, ``/health`` and ``/v1/models``, as llama.cpp while loading
- ``inband_error`` (after ``after`` tokens, ``data: {"error": ...}`` then ``[DONE]``)
- ``drop`` (after ``after`` tokens the TCP connection is aborted, no end of body)
- ``no_done`` (the whole reply, then a clean end of body without ``data: [DONE]``)
- ``garbage`` (junk lines between events: non-JSON ``data:``, lines without a field, odd fields)
- ``hang`` (after ``after`` tokens, default 0, nothing more until the client goes away)
- ``empty`` (the role chunk, then ``data: [DONE]``: no content, no ``finish_reason``, no usage; what
  llama-cpp-python's server sends for a stream it interrupted because another request arrived)
- ``busy_probe`` (not a chat fault: while it is set, ``/health`` and ``/v1/models`` wait until no chat
  stream is being written, as llama-cpp-python's ``/v1/models`` waits for the lock a generation holds)

Stream options (attributes): ``crlf`` (CRLF line endings), ``pings`` (``: ping`` comments),
``usage`` (``asked``: only with ``stream_options.include_usage``, as vLLM; ``always``, as some llama.cpp
builds; ``never``), ``tool_calls`` (a list of ``{"name", "arguments"}`` streamed as split fragments),
``extra_keys`` (unknown keys on every chunk, as newer vLLM and llama.cpp's ``timings``).

Counters: ``requests_by_path``, ``chat_requests``, ``image_requests`` (chat requests whose last user message
carries an OpenAI-style ``image_url`` content part, as a vision model takes a photo), ``transcriptions``
(the multipart ``/v1/audio/transcriptions`` requests, OpenAI's form as vLLM serves Whisper; the ``status`` and
``loading`` faults apply to them too), ``open_connections``, ``active_streams`` (chat streams
being written now), ``peak_streams`` (the most written at once), ``aborted_streams`` (streams whose client
went away before the end).

As a process: ``python -m tests.inference_server --port 8123 [--reply TEXT] [--token-delay 0.01]``; control
it with ``POST /_control`` (JSON: ``reply``, ``echo``, ``token_delay``, ``fault`` = ``{"kind": ..., ...}``,
``clear_faults``) and read counters at ``GET /_stats``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_TOKEN = re.compile(r"\S+\s*|\s+")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def tokens_of(text: str) -> list[str]:
    """How the server splits a reply into streamed tokens (a word and the space after it)."""
    return _TOKEN.findall(text)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON, or the raw bytes of another body (a multipart form)


@dataclass
class _Fault:
    kind: str
    times: int | None
    params: dict[str, Any] = field(default_factory=dict)


class InferenceServer:
    def __init__(
        self,
        *,
        reply: str = "Hello from the test inference server.",
        model: str = "test-model",
        token_delay: float = 0.0,
        port: int = 0,
        embedding_dimensions: int = 384,
    ) -> None:
        self.model = model
        self.reply: str | Callable[[dict[str, Any]], str] = reply
        self.echo = False
        self.image_reply = "A photo of a product."
        self.image_requests = 0
        self.transcript = "What do you have for camping?"
        self.transcriptions: list[tuple[str, str, str, bytes]] = []
        self.token_delay = token_delay
        self.crlf = False
        self.pings = False
        self.usage = "asked"
        self.tool_calls: list[dict[str, str]] = []
        self.extra_keys = False
        self.embedding_dimensions = embedding_dimensions
        self.port = port
        self.requests: list[RecordedRequest] = []
        self.requests_by_path: dict[str, int] = {}
        self.chat_requests = 0
        self.open_connections = 0
        self.active_streams = 0
        self.peak_streams = 0
        self.aborted_streams = 0
        self._queue: list[str] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # --- lifecycle --------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> InferenceServer:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def boot() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=512)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(boot())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"inference-server-{id(self)}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the test inference server did not start")
        return self

    def stop(self) -> None:
        """Close the listening socket and every connection (a killed server, as the clients see it)."""
        if self._loop is None or self._loop.is_closed():
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> InferenceServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- controls -------------------------------------------------------------------------------------------

    def script(self, reply: str | Callable[[dict[str, Any]], str]) -> None:
        """Every following reply (a string, or a function of the request body)."""
        with self._lock:
            self.reply = reply
            self.echo = False

    def script_queue(self, replies: list[str]) -> None:
        """The next replies, one per chat request, before falling back to ``reply``."""
        with self._lock:
            self._queue.extend(replies)

    def fault(self, kind: str, *, times: int | None = None, **params: Any) -> None:
        kinds = {
            "slow_first_token",
            "status",
            "loading",
            "inband_error",
            "drop",
            "no_done",
            "garbage",
            "hang",
            "empty",
            "busy_probe",
        }
        if kind not in kinds:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(kinds)}")
        with self._lock:
            self._faults.append(_Fault(kind, times, params))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()
            self.requests_by_path.clear()
            self.chat_requests = 0
            self.image_requests = 0
            self.transcriptions.clear()
            self.peak_streams = 0
            self.aborted_streams = 0

    def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.01)
        return condition()

    def stats(self) -> dict[str, Any]:
        return {
            "chat_requests": self.chat_requests,
            "requests_by_path": dict(self.requests_by_path),
            "open_connections": self.open_connections,
            "active_streams": self.active_streams,
            "peak_streams": self.peak_streams,
            "aborted_streams": self.aborted_streams,
        }

    def _take_fault(self, *kinds: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind in kinds:
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _peek_fault(self, kind: str) -> bool:
        with self._lock:
            return any(fault.kind == kind for fault in self._faults)

    def _reply_for(self, body: dict[str, Any]) -> str:
        with self._lock:
            users = [m for m in body.get("messages", []) if m.get("role") == "user"]
            parts = users[-1].get("content") if users else None
            if isinstance(parts, list) and any(
                isinstance(p, dict) and p.get("type") == "image_url" for p in parts
            ):
                self.image_requests += 1
                return self.image_reply
            if self._queue:
                return self._queue.pop(0)
            if self.echo:
                content = users[-1].get("content", "") if users else ""
                return content if isinstance(content, str) else json.dumps(content)
            return self.reply(body) if callable(self.reply) else self.reply

    # --- HTTP -------------------------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                raw = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                body: Any
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                path = path.split("?", 1)[0]
                with self._lock:
                    self.requests_by_path[path] = self.requests_by_path.get(path, 0) + 1
                    if path != "/_stats":
                        self.requests.append(RecordedRequest(method, path, headers, body))
                        del self.requests[:-500]
                keep = await self._route(method, path, headers, body, reader, writer)
                if not keep or headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self.open_connections -= 1
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _json(self, writer: asyncio.StreamWriter, status: int, payload: Any, extra: str = "") -> bool:
        data = json.dumps(payload).encode() if payload is not None else b""
        writer.write(
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n{extra}\r\n".encode()
            + data
        )
        await writer.drain()
        return True

    async def _route(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: Any,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        loading = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
        if path in ("/health", "/v1/health", "/v1/models") and self._peek_fault("busy_probe"):
            while self.active_streams:
                await asyncio.sleep(0.01)
        if path in ("/health", "/v1/health"):
            if self._peek_fault("loading"):
                return await self._json(writer, 503, loading)
            return await self._json(writer, 200, {"status": "ok"})
        if path == "/v1/models":
            if self._peek_fault("loading"):
                return await self._json(writer, 503, loading)
            return await self._json(
                writer,
                200,
                {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "test"}]},
            )
        if path == "/v1/embeddings" and method == "POST":
            return await self._embeddings(writer, body if isinstance(body, dict) else {})
        if path == "/v1/audio/transcriptions" and method == "POST":
            return await self._transcription(writer, headers, body if isinstance(body, bytes) else b"")
        if path == "/v1/chat/completions" and method == "POST":
            with self._lock:
                self.chat_requests += 1
            return await self._chat(writer, reader, body if isinstance(body, dict) else {})
        if path == "/_control" and method == "POST":
            self._control(body if isinstance(body, dict) else {})
            return await self._json(writer, 200, self.stats())
        if path == "/_stats":
            return await self._json(writer, 200, self.stats())
        return await self._json(
            writer, 404, {"error": {"message": f"no route {path}", "type": "not_found", "code": 404}}
        )

    def _control(self, body: dict[str, Any]) -> None:
        if body.get("clear_faults"):
            self.clear_faults()
        if "reply" in body:
            self.script(str(body["reply"]))
        if "echo" in body:
            self.echo = bool(body["echo"])
        if "token_delay" in body:
            self.token_delay = float(body["token_delay"])
        if body.get("fault"):
            params = dict(body["fault"])
            self.fault(params.pop("kind"), times=params.pop("times", None), **params)

    async def _embeddings(self, writer: asyncio.StreamWriter, body: dict[str, Any]) -> bool:
        fault = self._take_fault("status", "loading")
        if fault is not None:
            return await self._json(
                writer, int(fault.params.get("status", 503)), {"error": {"message": "fault"}}
            )
        inputs = body.get("input", [])
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": embedding_of(str(text), self.embedding_dimensions),
            }
            for i, text in enumerate(inputs)
        ]
        tokens = sum(len(str(text).split()) for text in inputs)
        return await self._json(
            writer,
            200,
            {
                "object": "list",
                "data": data,
                "model": body.get("model", self.model),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    async def _transcription(self, writer: asyncio.StreamWriter, headers: dict[str, str], raw: bytes) -> bool:
        fault = self._take_fault("status", "loading")
        if fault is not None:
            return await self._json(
                writer, int(fault.params.get("status", 503)), {"error": {"message": "fault"}}
            )
        boundary = headers.get("content-type", "").partition("boundary=")[2].strip('"')
        fields: dict[str, tuple[str, str, bytes]] = {}
        for part in raw.split(b"--" + boundary.encode()) if boundary else []:
            head, _, data = part.partition(b"\r\n\r\n")
            name = re.search(rb'name="([^"]*)"', head)
            if name is None:
                continue
            filename = re.search(rb'filename="([^"]*)"', head)
            kind = re.search(rb"Content-Type: *([^\r\n]*)", head, re.IGNORECASE)
            fields[name.group(1).decode()] = (
                filename.group(1).decode() if filename else "",
                kind.group(1).decode() if kind else "",
                data.removesuffix(b"\r\n"),
            )
        if "file" not in fields:
            return await self._json(writer, 400, {"error": {"message": "no file", "code": 400}})
        filename, content_type, audio = fields["file"]
        model = fields.get("model", ("", "", b""))[2].decode()
        with self._lock:
            self.transcriptions.append((model, filename, content_type, audio))
        return await self._json(writer, 200, {"text": self.transcript})

    async def _chat(
        self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader, body: dict[str, Any]
    ) -> bool:
        loading = self._take_fault("loading")
        if loading is not None:
            return await self._json(
                writer, 503, {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
            )
        status = self._take_fault("status")
        if status is not None:
            code = int(status.params.get("status", 500))
            message = str(status.params.get("message", f"injected {code}"))
            if status.params.get("shape", "nested") == "flat":
                payload: dict[str, Any] = {
                    "object": "error",
                    "message": message,
                    "type": "InternalServerError",
                    "param": None,
                    "code": code,
                }
            else:
                payload = {
                    "error": {"message": message, "type": "InternalServerError", "param": None, "code": code}
                }
            return await self._json(writer, code, payload, "Retry-After: 1\r\n" if code == 429 else "")
        fault = self._take_fault(
            "slow_first_token", "inband_error", "drop", "no_done", "garbage", "hang", "empty"
        )
        text = self._reply_for(body)
        pieces = tokens_of(text)
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in body.get("messages", []))
        if not body.get("stream"):
            return await self._json(
                writer,
                200,
                {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "model": self.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": len(pieces),
                        "total_tokens": prompt_tokens + len(pieces),
                    },
                },
            )
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        self.active_streams += 1
        self.peak_streams = max(self.peak_streams, self.active_streams)
        # The client going away is seen at once, even while we sleep between tokens.
        gone = asyncio.ensure_future(reader.read(1))
        streamer = asyncio.ensure_future(self._stream(writer, body, pieces, prompt_tokens, fault))
        try:
            done, _ = await asyncio.wait({gone, streamer}, return_when=asyncio.FIRST_COMPLETED)
            if streamer in done:
                return bool(streamer.result())
            self.aborted_streams += 1
            streamer.cancel()
            with contextlib.suppress(BaseException):
                await streamer
            return False
        except ConnectionError:
            self.aborted_streams += 1
            return False
        finally:
            self.active_streams -= 1
            if not gone.done():
                gone.cancel()
                # A cancelled read leaves the reader usable for the next request on this connection.
                with contextlib.suppress(BaseException):
                    await gone

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        body: dict[str, Any],
        pieces: list[str],
        prompt_tokens: int,
        fault: _Fault | None,
    ) -> bool:
        end = "\r\n" if self.crlf else "\n"
        kind = fault.kind if fault else ""
        params = fault.params if fault else {}
        base: dict[str, Any] = {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
        }
        if self.extra_keys:
            base["system_fingerprint"] = "test-fp"

        async def send(text: str) -> None:
            data = text.encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()

        async def event(payload: Any) -> None:
            await send(f"data: {payload if isinstance(payload, str) else json.dumps(payload)}{end}{end}")

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            out = {**base, "choices": [choice]}
            if self.usage == "always" or (body.get("stream_options") or {}).get("include_usage"):
                out["usage"] = None
            if self.extra_keys:
                choice["stop_reason"] = None
                out["timings"] = {"predicted_ms": 1.0}
            return out

        after = int(params.get("after", 0))
        if kind in ("inband_error", "hang", "drop") and after == 0:
            await self._fault_now(kind, writer, event, params)
            return False
        await event(chunk({"role": "assistant", "content": ""}))
        if kind == "empty":
            await event("[DONE]")
            await send("")
            return True
        if self.pings:
            await send(f": ping{end}{end}")
        if kind == "slow_first_token":
            await asyncio.sleep(float(params.get("delay", 1.0)))
        for i, piece in enumerate(pieces):
            if i and self.token_delay:
                await asyncio.sleep(self.token_delay)
            if kind == "garbage":
                await send(f"data: {{not json{end}{end}this line has no field{end}event: odd{end}{end}")
            await event(chunk({"content": piece}))
            if self.pings and i % 3 == 0:
                await send(f": ping{end}{end}")
            if kind in ("inband_error", "hang", "drop") and i + 1 == after:
                await self._fault_now(kind, writer, event, params)
                return False
        finish = "stop"
        if self.tool_calls:
            finish = "tool_calls"
            for index, call in enumerate(self.tool_calls):
                await event(
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": index,
                                    "id": f"call-{index}",
                                    "type": "function",
                                    "function": {"name": call["name"], "arguments": ""},
                                }
                            ]
                        }
                    )
                )
                arguments = call.get("arguments", "")
                for start in range(0, len(arguments), 7):
                    await event(
                        chunk(
                            {
                                "tool_calls": [
                                    {"index": index, "function": {"arguments": arguments[start : start + 7]}}
                                ]
                            }
                        )
                    )
        await event(chunk({"content": ""}, finish))
        if self.usage == "always" or (
            self.usage == "asked" and (body.get("stream_options") or {}).get("include_usage")
        ):
            await event(
                {
                    **base,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": len(pieces),
                        "total_tokens": prompt_tokens + len(pieces),
                    },
                }
            )
        if kind != "no_done":
            await event("[DONE]")
        await send("")  # the last chunk of a chunked body: a clean end
        return True

    async def _fault_now(
        self, kind: str, writer: asyncio.StreamWriter, event: Any, params: dict[str, Any]
    ) -> None:
        if kind == "inband_error":
            await event(
                {
                    "error": {
                        "message": params.get("message", "injected in-band error"),
                        "type": "InternalServerError",
                        "code": 500,
                    }
                }
            )
            await event("[DONE]")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        elif kind == "drop":
            writer.transport.abort()
        elif kind == "hang":
            await asyncio.Event().wait()


def embedding_of(text: str, dimensions: int = 384) -> list[float]:
    """A deterministic unit vector for ``text``."""
    rng = random.Random(hashlib.blake2b(text.encode(), digest_size=8).digest())
    vector = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reply", default="Hello from the test inference server.")
    parser.add_argument("--model", default="test-model")
    parser.add_argument("--token-delay", type=float, default=0.0)
    args = parser.parse_args()
    server = InferenceServer(
        reply=args.reply, model=args.model, token_delay=args.token_delay, port=args.port
    ).start()
    print(f"ready {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
