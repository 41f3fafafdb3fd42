"""A lean trio stream over a connected TCP socket, for fleets of plain connections.

Shared by the SDK (plain connections to literal addresses) and the reference server (its
plain MQTT port): it imports nothing else of ``pushsdk``, and the import contracts in
``pyproject.toml`` let the server take it beside the codec.

``trio.SocketStream`` wraps a trio socket object that wraps the OS socket, and adds conflict
detectors and a context manager per call: about a kilobyte per connection, which a process
holding tens of thousands of idle push connections feels. :class:`TcpStream` keeps what the
SDK relies on — trio's checkpoint and cancellation rules (a cancelled ``receive_some`` loses
no data; a cancelled ``send_all`` leaves the stream unusable, as trio documents), errors as
``trio.BrokenResourceError`` / ``trio.ClosedResourceError``, half-close — over the OS socket
directly. It does not detect two tasks using one direction at once: a session has one task.
Checked against trio's own conformance suite (``trio.testing.check_half_closeable_stream``).
TLS wraps it like any other stream.

A :class:`TrafficObserver` set on ``stream.observer`` is told of every write and read — what
a wrapping stream would see, without the coroutine frame a wrapper keeps alive while the
connection idles (a fleet meters tens of thousands of radios this way).
"""
from __future__ import annotations

import errno
import os
import socket
from typing import Protocol

import trio

from . import _idle

__all__ = ["TcpStream", "TrafficObserver", "open_tcp"]

_MAX_RECEIVE = 65536
_IN_PROGRESS = (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN)


def _recv(sock: socket.socket, max_bytes: int) -> bytes | None:
    """What the socket has, or None when it has nothing yet.

    A function of its own so that the BlockingIOError is raised and caught in a frame that
    ends here: raised in ``receive_some`` it would give that coroutine a frame object (and
    waiting inside the except block would keep the error, its traceback and message), alive
    for as long as the connection idles, 0.2 to 0.8 KB per connection."""
    try:
        return sock.recv(max_bytes)
    except BlockingIOError:
        return None
    except OSError as exc:
        raise trio.BrokenResourceError(f"receive failed: {exc}") from exc


class TrafficObserver(Protocol):
    """Told of a :class:`TcpStream`'s traffic, synchronously, from the task doing the I/O."""

    def on_sent(self, nbytes: int) -> None:
        """A write of ``nbytes`` is handed to the socket (one ``send_all``, or what one
        ``try_send`` wrote); called before the bytes are out, as for a wrapping stream."""

    def on_received(self, data: bytes) -> None:
        """``receive_some`` is returning ``data`` (never empty: EOF is not reported)."""


class TcpStream(trio.abc.HalfCloseableStream):
    """A connected, non-blocking ``socket.socket`` as a trio stream (``.socket``).

    ``observer``: a :class:`TrafficObserver` to tell of each write and read, or None."""

    __slots__ = ("_closed", "_eof_sent", "_parked", "_sending", "observer", "socket")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        try:  # as trio.SocketStream does: small packets (pings) go out at once
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.socket = sock
        self._closed = False
        self._eof_sent = False
        self._sending = False  # a send_all or send_eof is under way (they may not overlap)
        self.observer: TrafficObserver | None = None
        # The wait of a receive_until under way: parked in the idle hub, or (no hub) the
        # cancel scope that bounds it.
        self._parked: _idle.Parked | trio.CancelScope | None = None

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the stream is closed")

    def _start_sending(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._check_open()
        self._sending = True

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._start_sending()
        try:
            if self._eof_sent:
                raise trio.ClosedResourceError("cannot send data after sending EOF")
            await trio.lowlevel.checkpoint_if_cancelled()
            sock = self.socket
            yielded = False
            with memoryview(data) as view:
                if self.observer is not None and view.nbytes:
                    self.observer.on_sent(view.nbytes)
                sent, total = 0, len(view)
                while sent < total:
                    try:
                        sent += sock.send(view[sent:])
                        continue
                    except BlockingIOError:
                        pass
                    except OSError as exc:
                        raise trio.BrokenResourceError(f"send failed: {exc}") from exc
                    await trio.lowlevel.wait_writable(sock)  # outside the except: see receive_some
                    yielded = True
            if not yielded:
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    def try_send(self, data: bytes) -> int:
        """Write what the socket takes now, without waiting; bytes written (a fast path:
        a small packet to an idle socket needs no deadline guard and no scheduler round
        trip). Raises like :meth:`send_all`."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._check_open()
        if self._eof_sent:
            raise trio.ClosedResourceError("cannot send data after sending EOF")
        try:
            sent = self.socket.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise trio.BrokenResourceError(f"send failed: {exc}") from exc
        if sent and self.observer is not None:
            self.observer.on_sent(sent)
        return sent

    async def wait_send_all_might_not_block(self) -> None:
        self._start_sending()
        try:
            await trio.lowlevel.wait_writable(self.socket)
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        self._start_sending()
        try:
            await trio.lowlevel.checkpoint()
            if self._eof_sent:
                return
            self._eof_sent = True
            try:
                self.socket.shutdown(socket.SHUT_WR)
            except OSError as exc:
                if exc.errno != errno.ENOTCONN:  # the peer is gone already: EOF is moot
                    raise trio.BrokenResourceError(f"shutdown failed: {exc}") from exc
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is None:
            max_bytes = _MAX_RECEIVE
        elif max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        self._check_open()
        await trio.lowlevel.checkpoint_if_cancelled()
        sock = self.socket
        yielded = False
        while (data := _recv(sock, max_bytes)) is None:
            # Cancellable while nothing has been read: no data is lost.
            await trio.lowlevel.wait_readable(sock)
            yielded = True
        if not yielded:
            await trio.lowlevel.cancel_shielded_checkpoint()
        if data and self.observer is not None:
            self.observer.on_received(data)
        return data

    async def receive_until(self, max_bytes: int, deadline: float) -> bytes | None:
        """:meth:`receive_some`, or None once ``deadline`` (trio time) has passed or
        :meth:`interrupt` was called: the idle wait of a push connection. On Linux it is
        parked in the run's :class:`~pushsdk._idle.IdleHub` (no cancel scope and no trio
        registration of its own); elsewhere a cancel scope bounds an ordinary wait. Also
        None, now and then, when nothing had arrived after all: callers look again."""
        self._check_open()
        if self._parked is not None:
            raise trio.BusyResourceError("another task is receiving on this stream")
        await trio.lowlevel.checkpoint_if_cancelled()
        data = _recv(self.socket, max_bytes)
        if data is not None:
            await trio.lowlevel.cancel_shielded_checkpoint()
        elif not _idle.AVAILABLE:
            with trio.move_on_at(deadline) as scope:
                self._parked = scope
                try:
                    data = await self.receive_some(max_bytes)
                finally:
                    self._parked = None
            return data
        else:
            parked = self._parked = _idle.hub().park(self.socket.fileno(), deadline)
            try:
                await trio.lowlevel.wait_task_rescheduled(parked)
            finally:
                self._parked = None
            if parked.result == _idle.CLOSED:
                raise trio.ClosedResourceError("the stream was closed while receiving")
            if parked.result != _idle.READY:
                return None
            data = _recv(self.socket, max_bytes)
            if data is None:
                return None
        if data and self.observer is not None:
            self.observer.on_received(data)
        return data

    def interrupt(self) -> None:
        """End a :meth:`receive_until` under way, which then returns None (nothing if none
        is): how another task wakes an idle connection."""
        parked = self._parked
        if isinstance(parked, _idle.Parked):
            parked.hub.resume(parked, _idle.WOKEN)
        elif parked is not None:
            parked.cancel()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """Close at once, without a checkpoint (``aclose`` is this and a checkpoint): for a
        task that is ending, where ``trio.aclose_forcefully`` would add a cancel scope and
        a cancelled checkpoint — measurable when thousands of connections end at once."""
        if not self._closed:
            self._closed = True
            parked = self._parked
            if isinstance(parked, _idle.Parked):  # before the socket goes: it unregisters
                parked.hub.resume(parked, _idle.CLOSED)
            trio.lowlevel.notify_closing(self.socket)  # wakes a task blocked on it
            self.socket.close()


async def open_tcp(host: str, port: int, family: int, source_ip: str | None) -> TcpStream:
    """Connect to the literal address ``host:port`` (from ``source_ip`` if given)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if source_ip is not None:
            # Let connect() pick the port, so that ports are shared between different
            # destinations (bind() alone would reserve one per socket: exhaustion).
            no_port = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux's value
            try:
                sock.setsockopt(socket.IPPROTO_IP, no_port, 1)
            except OSError:
                pass
            sock.bind((source_ip, 0))
        await trio.lowlevel.checkpoint_if_cancelled()
        err = sock.connect_ex((host, port))
        if err in _IN_PROGRESS:
            await trio.lowlevel.wait_writable(sock)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
    except BaseException:
        sock.close()
        raise
    return TcpStream(sock)
