"""One HTTP/1.1 connection of the reference server: framing, limits and hardening around h11.

Rules, each covered by tests (``tests/server/test_server_http*.py``):

* every request gets an answer when one can still be sent — errors are JSON
  ``{"error": {"code", "message"}}``; nothing a client sends produces a 500;
* keep-alive, with an idle timeout between requests and at most
  ``max_requests_per_connection`` requests (the last answer says ``Connection: close``);
  a connection silent that long (or silent from the start for ``request_timeout``) is
  closed at a random moment up to ``timeout_spread`` of that time later, so that
  connections opened together (a flood of held connections) do not all end in one
  scheduler pass;
* a request must arrive whole (head and body) within ``request_timeout`` of its first
  byte, else 408 and close — slow clients cannot hold connections open;
* bodies over ``max_body_bytes`` get 413 without being read; heads over
  ``max_header_bytes`` 431;
* request smuggling is refused, where h11 alone would be lenient: a request head with a
  bare LF line ending or an obs-fold continuation line, ``Content-Length`` together with
  ``Transfer-Encoding``, or a repeated ``Authorization``/``X-App-Key``/``Host`` header is a
  400 and the connection closes. To see the raw head, this module frames heads itself and
  hands each request to a fresh ``h11.Connection`` (pipelined bytes carried over through
  ``trailing_data``);
* an answer that ends the connection (400, 408, 413, ...) is followed by a half-close and
  a short drain, so the client reads it instead of a connection reset.
"""
from __future__ import annotations

import http
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import attrs
import h11
import trio

from .http_api import Reply, error_reply
from .logs import server_logger

if TYPE_CHECKING:
    from .settings import Limits

__all__ = ["HttpConnection", "count_reply", "head_problem", "refuse", "reply_bytes"]

log = server_logger("simulator.server.http")

RECEIVE_SIZE = 16 * 1024
#: After an error that ends the connection, read (and discard) this much for this long
#: before closing, so the kernel does not reset the connection under the unread answer.
LINGER_BYTES = 256 * 1024
LINGER_SECONDS = 2.0
_REASONS = {int(s): s.phrase.encode() for s in http.HTTPStatus}
#: Headers a request may carry at most once (two Authorization headers: which one counts
#: would depend on who reads them, the smuggling that RFC 9110 §5.3 warns of).
SINGLE_HEADERS = (b"authorization", b"x-app-key", b"host")

Answer = Callable[[h11.Request, bytes], Awaitable[Reply]]


def head_problem(head: bytes) -> str | None:
    """Why a request head (request line and headers, up to and including the empty line)
    is refused, or None: bare LF line endings and obs-fold (RFC 9112 §5.2: a server MUST
    reject or replace it; lines starting with a space or tab after the request line)."""
    lines = head.split(b"\r\n")
    if any(b"\n" in line for line in lines):
        return "bare LF line ending in the request head (CRLF required)"
    if any(line[:1] in (b" ", b"\t") for line in lines[1:-2]):
        return "obs-fold (a header line continued on the next line) is not accepted"
    return None


def header_problem(request: h11.Request) -> str | None:
    """Why a parsed request's headers are refused (smuggling), or None."""
    names = [name for name, _ in request.headers]
    if b"content-length" in names and b"transfer-encoding" in names:
        return "Content-Length together with Transfer-Encoding"
    for name in SINGLE_HEADERS:
        if names.count(name) > 1:
            return f"more than one {name.decode().title()} header"
    return None


@attrs.define
class _Framing:
    """Bytes received and not yet handed to a request's h11 connection."""

    buffer: bytearray = attrs.field(factory=bytearray)
    eof: bool = False
    started: float | None = None  # trio time of the current request's first byte


class HttpConnection:
    """Serves the requests of one accepted connection with ``answer`` until it ends."""

    __slots__ = ("answer", "conn", "counters", "framing", "limits", "rng", "stream")

    def __init__(self, stream: trio.abc.Stream, limits: Limits, answer: Answer,
                 counters: object, rng: random.Random | None = None) -> None:
        self.stream = stream
        self.rng = rng  # spreads silent closes (``timeout_spread``); None: none
        self.limits = limits
        self.answer = answer
        self.counters = counters
        self.framing = _Framing()
        self.conn = self._new_conn()

    def _new_conn(self) -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)

    async def run(self) -> None:
        limits = self.limits
        idle_deadline = self._silence_deadline(limits.request_timeout)  # first request
        served = 0
        while True:
            outcome = await self._read_request(idle_deadline)
            if outcome is None:
                return
            request: h11.Request | None = None
            if isinstance(outcome, Reply):  # the request itself was unacceptable
                reply = outcome
            else:
                request, body = outcome
                reply = await self.answer(request, body)
                served += 1
                if served >= limits.max_requests_per_connection and not reply.close:
                    reply = attrs.evolve(reply, close=True)
            head_only = request is not None and request.method == b"HEAD"
            if not await self._send_reply(reply, head=head_only):
                return
            conn = self.conn
            if reply.close or conn.our_state is not h11.DONE:
                await self._linger()
                return
            if conn.their_state is not h11.DONE:
                return
            if reply.pause:  # back-pressure: the client's next bytes wait in the kernel
                await trio.sleep(min(reply.pause, limits.idle_timeout))
            data, closed = conn.trailing_data
            self.framing = _Framing(bytearray(data), closed)
            self.conn = self._new_conn()
            idle_deadline = self._silence_deadline(limits.idle_timeout)

    def _silence_deadline(self, timeout: float) -> float:
        """When a connection silent from now on is closed: ``timeout`` from now, plus up to
        ``timeout_spread`` of it more."""
        spread = self.limits.timeout_spread
        if self.rng is not None and spread:
            timeout *= 1.0 + spread * self.rng.random()
        return trio.current_time() + timeout

    # --- reading -------------------------------------------------------------------------

    async def _receive(self, deadline: float) -> bool:
        """Receive more bytes into the framing buffer before ``deadline``; False if it
        passed first."""
        with trio.move_on_at(deadline):
            data = await self.stream.receive_some(RECEIVE_SIZE)
            if data:
                self.framing.buffer += data
            else:
                self.framing.eof = True
            return True
        return False

    async def _read_head(self, idle_deadline: float) -> bytes | Reply | None:
        """The next request head, checked; an error Reply; None to close silently.
        Sets ``framing.started``: when the request's first byte arrived."""
        framing, limits = self.framing, self.limits
        if framing.buffer:  # pipelined: the next request has started already
            framing.started = trio.current_time()
        while True:
            buffer = framing.buffer
            while buffer[:2] == b"\r\n":  # RFC 9112 §2.2: ignore empty lines before it
                del buffer[:2]
            end = buffer.find(b"\r\n\r\n")
            head = bytes(buffer if end < 0 else buffer[:end + 4])
            problem = head_problem(head if end >= 0 else head + b"\r\n\r\n")
            if problem is not None:
                return error_reply(400, "bad_http", f"malformed HTTP request: {problem}",
                                   close=True)
            if len(head) > limits.max_header_bytes:
                return error_reply(431, "headers_too_large",
                                   f"request head over {limits.max_header_bytes} bytes",
                                   close=True)
            if end >= 0:
                del buffer[:end + 4]
                return head
            if framing.eof:
                if not buffer:
                    return None  # closed between requests
                return error_reply(400, "bad_http", "the connection ended inside a request "
                                   "head", close=True)
            started = framing.started
            deadline = idle_deadline if started is None else started + limits.request_timeout
            if not await self._receive(deadline):
                return None if started is None else self._timeout()
            if framing.started is None and (framing.buffer or framing.eof):
                framing.started = trio.current_time()

    async def _read_request(self, idle_deadline: float
                            ) -> tuple[h11.Request, bytes] | Reply | None:
        """The next request with its body, an error Reply, or None to close silently."""
        head = await self._read_head(idle_deadline)
        if not isinstance(head, bytes):
            return head
        framing = self.framing
        assert framing.started is not None
        conn = self.conn
        conn.receive_data(head)
        if framing.buffer:
            conn.receive_data(bytes(framing.buffer))
            framing.buffer.clear()
        if framing.eof:
            conn.receive_data(b"")
        return await self._read_body(conn, framing.started + self.limits.request_timeout)

    async def _read_body(self, conn: h11.Connection, deadline: float
                         ) -> tuple[h11.Request, bytes] | Reply | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                # h11 hints 501 for a transfer coding other than chunked: a client's
                # request all the same, and no client input gets a 5xx here (found by
                # fuzzing, tests/fuzz/fuzz_http.py).
                status = exc.error_status_hint if exc.error_status_hint < 500 else 400
                code = "headers_too_large" if status == 431 else "bad_http"
                return error_reply(status, code, f"malformed HTTP request: {exc}", close=True)
            if event is h11.NEED_DATA:
                with trio.move_on_at(deadline):
                    chunk = await self.stream.receive_some(RECEIVE_SIZE)
                    # h11 takes any bytes-like object (documented; it appends to a
                    # bytearray): no bytes() copy on this hot path for its ``bytes`` annotation.
                    conn.receive_data(chunk)  # type: ignore[arg-type]
                    continue
                return self._timeout()
            if isinstance(event, h11.Request):
                request = event
                refused = self._check_request(request)
                if refused is not None:
                    return refused
                if conn.they_are_waiting_for_100_continue:
                    await self.stream.send_all(
                        conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.limits.max_body_bytes:
                    return self._too_large()
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request, bytes(body)
            else:  # ConnectionClosed before a request
                return None

    def _check_request(self, request: h11.Request) -> Reply | None:
        limits = self.limits
        problem = header_problem(request)
        if problem is not None:
            return error_reply(400, "bad_http", f"malformed HTTP request: {problem}",
                               close=True)
        for name, value in request.headers:
            if name == b"content-length" and int(value) > limits.max_body_bytes:
                return self._too_large()
        return None

    def _too_large(self) -> Reply:
        limit = self.limits.max_body_bytes
        return error_reply(413, "body_too_large", f"request body over {limit} bytes",
                           close=True)

    def _timeout(self) -> Reply:
        return error_reply(408, "request_timeout", f"the request did not arrive within "
                           f"{self.limits.request_timeout:g} s", close=True)

    # --- answering -----------------------------------------------------------------------

    async def _send_reply(self, reply: Reply, *, head: bool) -> bool:
        """Send ``reply``; False if it could not be sent (the connection is finished)."""
        conn = self.conn
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return False
        count_reply(self.counters, reply)
        data = reply_bytes(conn, reply, head=head)
        with trio.move_on_after(self.limits.request_timeout):
            await self.stream.send_all(data)
            return True
        return False

    async def _linger(self) -> None:
        """Half-close, then drain what the client still sends, so it reads our answer."""
        stream = self.stream
        if not isinstance(stream, trio.abc.HalfCloseableStream):
            return
        with trio.move_on_after(LINGER_SECONDS):
            await stream.send_eof()
            drained = 0
            while drained < LINGER_BYTES:
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    return
                drained += len(data)


def reply_bytes(conn: h11.Connection, reply: Reply, *, head: bool = False) -> bytes:
    """``reply`` as the bytes to send on ``conn`` (which is then DONE sending); the body
    left out for a HEAD request. A fresh ``h11.Connection(h11.SERVER)`` gives the answer to
    a connection refused before it is read (h11 lets a server answer first)."""
    headers = [
        ("Content-Type", reply.content_type),
        ("Content-Length", str(len(reply.body))),
        ("Cache-Control", "no-store"),
        ("Server", "pushsim"),
        *reply.headers,
    ]
    if reply.close:
        headers.append(("Connection", "close"))
    data = conn.send(h11.Response(status_code=reply.status, headers=headers,
                                  reason=_REASONS.get(reply.status, b"")))
    if reply.body and not head:
        data += conn.send(h11.Data(data=reply.body))
    return data + conn.send(h11.EndOfMessage())


def count_reply(counters: object, reply: Reply) -> None:
    """One answer sent, in ``http_requests`` and ``http_responses`` by status."""
    counters.http_requests += 1  # type: ignore[attr-defined]
    counters.http_responses[reply.status] += 1  # type: ignore[attr-defined]


async def refuse(stream: trio.abc.Stream, limits: Limits, counters: object,
                 reply: Reply) -> None:
    """Answer a connection ``reply`` before reading anything from it (and then close it
    at once: a refused connection is held no longer than that write)."""
    connection = HttpConnection(stream, limits, _never, counters)
    await connection._send_reply(reply, head=False)


async def _never(request: h11.Request, body: bytes) -> Reply:  # pragma: no cover
    raise AssertionError("a refused connection answers no request")
