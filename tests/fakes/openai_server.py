"""A fake OpenAI-compatible chat-completions server on a real loopback socket.

Tests drive the real ``openai`` client against it, so retries, status codes
and JSON bodies go through the same code as in production. A *handler* decides
each answer from the request body; ``scripted`` replays a fixed list.

    with FakeOpenAI(scripted('{"a": 1}', Reply(status=500), "done")) as fake:
        LLMConfig(base_url=fake.base_url, model="m")
        ...
        fake.requests  # parsed request bodies, in arrival order
"""

from __future__ import annotations

import json
import select
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (token, logprob, [(alternative, logprob), ...]) per generated token
Logprobs = list[tuple[str, float, list[tuple[str, float]]]]


@dataclass(frozen=True)
class Reply:
    """One answer of the fake. ``status`` other than 200 sends an OpenAI-style error body."""

    content: str | None = ""
    status: int = 200
    prompt_tokens: int | None = None  # None: a rough word count of the request
    completion_tokens: int | None = None  # None: a rough word count of the content
    finish_reason: str = "stop"
    logprobs: Logprobs | None = None
    usage: bool = True  # False omits the usage field, as some servers do
    error: str = ""  # message of an error reply
    error_param: str | None = None
    error_type: str = "invalid_request_error"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait before answering (client timeouts)


Handler = Callable[[dict[str, Any]], "str | Reply"]


class ScriptExhausted(AssertionError):
    pass


def scripted(*replies: str | Reply) -> Handler:
    """A handler answering ``replies`` in order; one request too many is a test failure
    (HTTP 500 that the client is told not to retry)."""
    queue = list(replies)
    lock = threading.Lock()

    def handler(_body: dict[str, Any]) -> str | Reply:
        with lock:
            if not queue:
                raise ScriptExhausted(f"the fake had {len(replies)} scripted replies and got one more request")
            return queue.pop(0)

    return handler


def echo(body: dict[str, Any]) -> str:
    """Default handler: answers with the last user message."""
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    return str(users[-1]) if users else ""


class FakeOpenAI:
    """Context manager running the fake on 127.0.0.1 in a background thread.

    ``reject_response_format``: True rejects every ``response_format`` with HTTP 400
    (param ``response_format``), or a collection of types to reject, e.g.
    ``{"json_schema"}`` for an endpoint that only knows json_object.
    ``retry_after_ms`` goes out on 408/409/429/5xx replies so the openai client's
    backoff takes milliseconds instead of seconds; None leaves the header off.
    ``reject_logprobs``: True answers HTTP 400 to every request that asks for
    ``logprobs``/``top_logprobs``, as endpoints without logprob support do; the
    error names ``logprobs_error_param`` (None: no param, only the message says why).
    ``llama_cpp``: answer ``response_format`` as llama.cpp's server (llama-cpp-python
    0.3.x) does: types other than text/json_object get its HTTP 500 with the request
    validator's message (``LLAMA_CPP_500``); json_object with a "schema" is accepted.
    ``serial``: answer one request at a time, as llama.cpp's server does by default;
    a request whose client gave up while it waited is dropped, not answered.
    ``peak_in_flight`` is the most requests the fake held at once.
    """

    def __init__(
        self,
        handler: Handler = echo,
        *,
        model: str = "fake-model",
        reject_response_format: bool | Collection[str] = False,
        retry_after_ms: int | None = 1,
        reject_logprobs: bool = False,
        logprobs_error_param: str | None = "logprobs",
        llama_cpp: bool = False,
        serial: bool = False,
    ) -> None:
        self.handler = handler
        self.model = model
        self._reject_all = reject_response_format is True
        self._reject_types = set() if isinstance(reject_response_format, bool) else set(reject_response_format)
        self.retry_after_ms = retry_after_ms
        self.reject_logprobs = reject_logprobs
        self.logprobs_error_param = logprobs_error_param
        self.llama_cpp = llama_cpp
        self.serial = serial
        self.requests: list[dict[str, Any]] = []
        self.dropped = 0  # serial: requests whose client left before their turn
        self.peak_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._turn = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the fake is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._server = _Server(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _record(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(body)

    def _rejects(self, body: dict[str, Any]) -> bool:
        fmt = body.get("response_format")
        if not isinstance(fmt, dict):
            return False
        return self._reject_all or fmt.get("type") in self._reject_types

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        """(status, headers, JSON body) for one chat-completions request."""
        fmt = body.get("response_format")
        if self.llama_cpp and isinstance(fmt, dict) and fmt.get("type") not in ("text", "json_object"):
            return 500, {}, _error(LLAMA_CPP_500.format(type=fmt.get("type")), None, "internal_server_error")
        if self._rejects(body):
            fmt = body["response_format"].get("type")
            return 400, {}, _error(f"response_format type {fmt!r} is not supported by this server", "response_format")
        if self.reject_logprobs and (body.get("logprobs") or "top_logprobs" in body):
            return 400, {}, _error("logprobs and top_logprobs are not supported by this model",
                                   self.logprobs_error_param)
        try:
            reply = self.handler(body)
        except Exception as e:  # a broken handler or an exhausted script: fail loudly, never retried
            payload = _error(f"fake handler failed: {type(e).__name__}: {e}", None, "server_error")
            return 500, {"x-should-retry": "false"}, payload
        if isinstance(reply, str):
            reply = Reply(content=reply)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        headers = dict(reply.headers)
        if (reply.status in (408, 409, 429) or reply.status >= 500) and self.retry_after_ms is not None:
            headers.setdefault("retry-after-ms", str(self.retry_after_ms))
        if reply.status != 200:
            message = reply.error or f"fake error {reply.status}"
            return reply.status, headers, _error(message, reply.error_param, reply.error_type)
        return 200, headers, self._completion(body, reply)

    def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        content = reply.content
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = sum(len(str(m.get("content", "")).split()) + 3 for m in body.get("messages", []))
        completion = reply.completion_tokens if reply.completion_tokens is not None else len((content or "").split())
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": reply.finish_reason,
            "logprobs": None,
        }
        if reply.logprobs is not None:
            choice["logprobs"] = {
                "content": [
                    {
                        "token": token,
                        "logprob": logprob,
                        "bytes": list(token.encode()),
                        "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top],
                    }
                    for token, logprob, top in reply.logprobs
                ],
                "refusal": None,
            }
        out: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [choice],
        }
        if reply.usage:
            out["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a burst of concurrent clients must not overflow the backlog (1 s SYN retry)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout tests) leaves a broken pipe behind: expected, not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


# What llama-cpp-python's server (0.3.36, FastAPI) answers, with HTTP 500, to a
# response_format type it does not know: its request model's validation error
# (captured from the real server; only the install path is shortened).
LLAMA_CPP_500 = (
    "1 validation error:\n  {{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
    "'msg': \"Input should be 'text' or 'json_object'\", 'input': '{type}', "
    "'ctx': {{'expected': \"'text' or 'json_object'\"}}}}\n\n"
    "  File \"/venv/lib/python3.11/site-packages/llama_cpp/server/app.py\", line 376, in create_chat_completion\n"
    "    POST /v1/chat/completions"
)


def _error(message: str, param: str | None, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def _make_handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like real servers; needs Content-Length everywhere
        timeout = 30  # an idle keep-alive connection must not pin a thread forever
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: Any) -> None:  # stdlib signature
            pass  # keep pytest output clean

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # stdlib naming
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                model = {"id": fake.model, "object": "model", "created": 0, "owned_by": "fake"}
                self._send(200, {"object": "list", "data": [model]})
            elif self.path == "/health":
                self._send(200, {"status": "ok"})
            else:
                self._send(404, _error(f"no route {self.path}", None))

        def do_POST(self) -> None:  # stdlib naming
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                self._send(404, _error(f"no route {self.path}", None))
                return
            try:
                body = json.loads(raw)
            except json.JSONDecodeError as e:
                self._send(400, _error(f"body is not JSON: {e}", None))
                return
            if body.get("stream"):
                self._send(400, _error("the fake does not stream", "stream"))
                return
            fake._record(body)
            with fake._lock:
                fake._in_flight += 1
                fake.peak_in_flight = max(fake.peak_in_flight, fake._in_flight)
            try:
                if fake.serial:
                    with fake._turn:
                        if _client_left(self.connection):
                            with fake._lock:
                                fake.dropped += 1
                            return
                        status, headers, payload = fake.answer(body)
                else:
                    status, headers, payload = fake.answer(body)
            finally:
                with fake._lock:
                    fake._in_flight -= 1
            self._send(status, payload, headers)

    return _Handler


def _client_left(sock: socket.socket) -> bool:
    """True when the peer closed the connection (EOF waiting to be read)."""
    ready, _, _ = select.select([sock], [], [], 0)
    if not ready:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def closed_port_url() -> str:
    """A loopback base URL nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
