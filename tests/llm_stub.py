"""A scripted language-model peer on 127.0.0.1 that speaks both wire protocols:

- OpenAI-compatible ``POST /v1/chat/completions`` (JSON, or SSE ``data: {...}`` chunks ending in
  ``data: [DONE]`` when ``"stream": true``; tool-call arguments split across chunks);
- Anthropic-compatible ``POST /v1/messages`` (JSON, or the SSE event stream message_start,
  content_block_start/delta/stop with ``text_delta``/``input_json_delta``, message_delta,
  message_stop).

It runs in a background thread (stdlib ``ThreadingHTTPServer``), so it serves async tests, sync
tests and subprocesses alike::

    with LLMStub() as stub:                 # or: async with LLMStub() as stub:
        stub.script(["hello there", tool_call("get_weather", {"city": "Paris"}), error(500)])
        provider = OpenAICompatProvider(base_url=stub.base_url, api_key="test", model="m")
        ...                                 # Anthropic: base_url=stub.anthropic_base_url
        assert stub.requests[0]["messages"][-1]["content"] == "hi"

Each request takes the next scripted reply; when the script is empty, `stub.responder(body)` is
asked (return a `Reply`, a str, or None to fall through), else the default reply echoes the last
user text (``"echo: ..."``). Every request body is recorded in `stub.requests` (and with path and
headers in `stub.calls`).
"""

from __future__ import annotations

import collections
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer.

    - `text`: the answer text (streamed word by word).
    - `tool_calls`: ``{"name": str, "arguments": dict | str, "id": str (optional)}``; a str
      `arguments` is sent verbatim, so it can be invalid JSON.
    - `status`: an HTTP error status (e.g. 500, 429) answered with the protocol's error body.
    - `delay`: seconds to wait before answering (to trigger client timeouts).
    - `chunk_delay`: seconds between streamed chunks.
    - `drop_after`: close the connection abruptly after this many streamed chunks.
    - `raw`: a body sent verbatim instead of the protocol's JSON (e.g. invalid JSON).
    - `headers`: extra response headers (e.g. ``{"retry-after": "0"}``).
    - `usage`: (input_tokens, output_tokens); default: word counts.
    """

    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    message: str = "scripted error"
    delay: float = 0.0
    chunk_delay: float = 0.0
    drop_after: int | None = None
    raw: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    usage: tuple[int, int] | None = None


def text(value: str, **kw: Any) -> Reply:
    return Reply(text=value, **kw)


def json_reply(obj: Any, **kw: Any) -> Reply:
    """A reply whose text is `obj` as JSON (for extraction prompts)."""
    return Reply(text=json.dumps(obj), **kw)


def tool_call(name: str, arguments: dict[str, Any] | str, *, id: str | None = None, text: str = "") -> Reply:
    return Reply(text=text, tool_calls=[{"name": name, "arguments": arguments, "id": id}])


def tool_calls(*calls: tuple[str, dict[str, Any] | str], text: str = "") -> Reply:
    return Reply(text=text, tool_calls=[{"name": n, "arguments": a} for n, a in calls])


def error(status: int = 500, message: str = "scripted error", **kw: Any) -> Reply:
    return Reply(status=status, message=message, **kw)


def delayed(seconds: float, reply: Reply | str = "too late") -> Reply:
    r = _as_reply(reply)
    r.delay = seconds
    return r


def invalid_json_body() -> Reply:
    return Reply(raw='{"id": "x", "choices": [ this is not json')


# ---------------------------------------------------------------------------------------------
# Request helpers (for responders)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict):
                if block.get("type") == "text":
                    parts.append(str(block.get("text", "")))
                elif block.get("type") == "tool_result":
                    parts.append(_text_of(block.get("content", "")))
        return "\n".join(parts)
    return ""


def system_text(body: dict[str, Any]) -> str:
    """The system prompt of an OpenAI or Anthropic request body."""
    parts = [_text_of(body.get("system", ""))] if body.get("system") else []
    parts += [_text_of(m.get("content")) for m in body.get("messages", []) if m.get("role") == "system"]
    return "\n\n".join(p for p in parts if p)


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user message (OpenAI or Anthropic body; tool results count)."""
    for message in reversed(body.get("messages", [])):
        if message.get("role") in ("user", "tool"):
            return _text_of(message.get("content"))
    return ""


def all_text(body: dict[str, Any]) -> str:
    """Every text of the request, system prompt included, joined by newlines."""
    return "\n".join([system_text(body)] + [_text_of(m.get("content")) for m in body.get("messages", [])])


def _as_reply(item: Reply | str) -> Reply:
    if isinstance(item, Reply):
        return item
    if isinstance(item, str):
        return Reply(text=item)
    if isinstance(item, int):
        return Reply(status=item)
    raise TypeError(f"cannot script {item!r}")


def _words(text: str) -> int:
    return len(text.split())


def _split(text: str) -> list[str]:
    """Word-sized pieces (whitespace kept), so a sentence streams as several deltas."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


def _thirds(s: str) -> list[str]:
    if len(s) < 3:
        return [s]
    a, b = len(s) // 3, 2 * len(s) // 3
    return [s[:a], s[a:b], s[b:]]


def _args_text(arguments: dict[str, Any] | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _usage(reply: Reply, body: dict[str, Any]) -> tuple[int, int]:
    if reply.usage:
        return reply.usage
    out = _words(reply.text) + sum(_words(_args_text(c["arguments"])) for c in reply.tool_calls)
    return _words(all_text(body)), out


def _call_id(call: dict[str, Any], i: int, prefix: str) -> str:
    return call.get("id") or f"{prefix}_{i}_{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------------------------
# OpenAI wire format


def openai_completion(reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
    i_tok, o_tok = _usage(reply, body)
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": _call_id(c, i, "call"),
                "type": "function",
                "function": {"name": c["name"], "arguments": _args_text(c["arguments"])},
            }
            for i, c in enumerate(reply.tool_calls)
        ]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": 1700000000,
        "model": body.get("model", "stub"),
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
        "usage": {"prompt_tokens": i_tok, "completion_tokens": o_tok, "total_tokens": i_tok + o_tok},
    }


def openai_chunks(reply: Reply, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The chunk objects of a streamed answer (without the final ``[DONE]``)."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk", "created": 1700000000}
    base["model"] = body.get("model", "stub")

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": piece}) for piece in _split(reply.text)]
    for i, call in enumerate(reply.tool_calls):
        head = {"index": i, "id": _call_id(call, i, "call"), "type": "function"}
        chunks.append(chunk({"tool_calls": [{**head, "function": {"name": call["name"], "arguments": ""}}]}))
        for piece in _thirds(_args_text(call["arguments"])):
            chunks.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    chunks.append(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        i_tok, o_tok = _usage(reply, body)
        usage = {"prompt_tokens": i_tok, "completion_tokens": o_tok, "total_tokens": i_tok + o_tok}
        chunks.append({**base, "choices": [], "usage": usage})
    return chunks


def openai_error(reply: Reply) -> dict[str, Any]:
    return {"error": {"message": reply.message, "type": "server_error", "code": reply.status}}


# ---------------------------------------------------------------------------------------------
# Anthropic wire format


def _tool_input(arguments: dict[str, Any] | str) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments  # not an object: the client must reject it


def anthropic_message(reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
    i_tok, o_tok = _usage(reply, body)
    content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text else []
    content += [
        {"type": "tool_use", "id": _call_id(c, i, "toolu"), "name": c["name"], "input": _tool_input(c["arguments"])}
        for i, c in enumerate(reply.tool_calls)
    ]
    return {
        "id": f"msg_{uuid.uuid4().hex[:12]}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "stub"),
        "content": content,
        "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": i_tok, "output_tokens": o_tok},
    }


def anthropic_events(reply: Reply, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    i_tok, o_tok = _usage(reply, body)
    message = anthropic_message(reply, body)
    start = {**message, "content": [], "stop_reason": None, "usage": {"input_tokens": i_tok, "output_tokens": 1}}
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": start})]
    events.append(("ping", {"type": "ping"}))
    index = 0
    if reply.text:
        block = {"type": "text", "text": ""}
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}))
        for piece in _split(reply.text):
            delta = {"type": "text_delta", "text": piece}
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    for i, call in enumerate(reply.tool_calls):
        block = {"type": "tool_use", "id": _call_id(call, i, "toolu"), "name": call["name"], "input": {}}
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}))
        for piece in _thirds(_args_text(call["arguments"])):
            delta = {"type": "input_json_delta", "partial_json": piece}
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": o_tok},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def anthropic_error(reply: Reply) -> dict[str, Any]:
    kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(reply.status, "api_error")
    if reply.status < 500 and reply.status != 429:
        kind = "invalid_request_error"
    return {"type": "error", "error": {"type": kind, "message": reply.message}}


# ---------------------------------------------------------------------------------------------
# The server


@dataclass
class StubCall:
    """One received request: its path, headers (lower-case names) and decoded JSON body."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, payload: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        stub = self.server.stub
        raw = self._read_body()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send(400, b'{"error": {"message": "request body is not JSON"}}', "application/json")
            return
        path = self.path.split("?")[0].rstrip("/")
        anthropic = path.endswith("/messages")
        if not (anthropic or path.endswith("/chat/completions")):
            self._send(404, b'{"error": {"message": "not found"}}', "application/json")
            return
        stub._record(StubCall(path, {k.lower(): v for k, v in self.headers.items()}, body))
        reply = stub._next_reply(body)
        if reply.delay and stub._stopped.wait(reply.delay):
            return  # the stub is shutting down
        try:
            self._answer(reply, body, anthropic)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            self.close_connection = True

    def _answer(self, reply: Reply, body: dict[str, Any], anthropic: bool) -> None:
        if reply.status >= 400:
            payload = anthropic_error(reply) if anthropic else openai_error(reply)
            self._send(reply.status, json.dumps(payload).encode(), "application/json", reply.headers)
            return
        stream = bool(body.get("stream"))
        if reply.raw is not None and not stream:
            self._send(200, reply.raw.encode(), "application/json", reply.headers)
            return
        if not stream:
            payload = anthropic_message(reply, body) if anthropic else openai_completion(reply, body)
            self._send(200, json.dumps(payload).encode(), "application/json", reply.headers)
            return
        if reply.raw is not None:
            framed = reply.raw.startswith(("data:", "event:"))
            frames = [reply.raw if framed else f"data: {reply.raw}\n\n"]
        elif anthropic:
            frames = [f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in anthropic_events(reply, body)]
        else:
            frames = [f"data: {json.dumps(c)}\n\n" for c in openai_chunks(reply, body)] + ["data: [DONE]\n\n"]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()
        for n, frame in enumerate(frames):
            if reply.drop_after is not None and n >= reply.drop_after:
                self.wfile.flush()
                self.close_connection = True
                return  # no terminating chunk: the client sees a broken body
            if n and reply.chunk_delay and self.server.stub._stopped.wait(reply.chunk_delay):
                return
            data = frame.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stub: LLMStub


class LLMStub:
    """The scripted OpenAI/Anthropic peer (see module doc). Use as a (sync or async) context
    manager, or call `start()`/`stop()`."""

    def __init__(self, responder: Callable[[dict[str, Any]], Reply | str | None] | None = None):
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self.calls: list[StubCall] = []
        self._script: collections.deque[Reply] = collections.deque()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- scripting

    def script(self, items: list[Reply | str | int]) -> LLMStub:
        """Queue replies for the next requests, in order (str = text, int = HTTP error status)."""
        with self._lock:
            self._script.extend(_as_reply(item) for item in items)
        return self

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        return len(self._script)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self.calls.clear()

    def _record(self, call: StubCall) -> None:
        with self._lock:
            self.calls.append(call)
            self.requests.append(call.body)

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            if self._script:
                return self._script.popleft()
        if self.responder is not None:
            answer = self.responder(body)
            if answer is not None:
                return _as_reply(answer)
        return Reply(text=f"echo: {last_user_text(body)[:200]}")

    # -- lifecycle

    @property
    def port(self) -> int:
        assert self._server is not None, "stub not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """Base URL for the OpenAI client (``.../v1``)."""
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """Base URL for the Anthropic client (it appends ``/v1/messages`` itself)."""
        return self.url

    def start(self) -> LLMStub:
        self._stopped.clear()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.stub = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="llm-stub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> LLMStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> LLMStub:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        import asyncio

        await asyncio.to_thread(self.stop)


# Both names serve both protocols.
OpenAIStub = LLMStub
AnthropicStub = LLMStub
