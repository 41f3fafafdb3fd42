"""``client.messages()``: messages as an async iterator, acknowledged after the app is done.

::

    async with client.messages() as messages:
        async for message in messages:
            handle(message)          # acknowledged when the loop asks for the next one

    async with client.messages(manual_ack=True) as messages:
        async for message in messages:
            await store(message)
            await messages.ack(message)   # now the PUBACK goes out

The connection hands each message to the stream and, once the app has finished with it (the
next iteration, or :meth:`MessageStream.ack`), records it and acknowledges it — so a message is
never acknowledged before the app could act on it, and exactly-once delivery holds as with
callbacks. Messages are handed over one at a time, in order; while the app holds one the
connection goes on (heartbeats, the app's own publish() and subscribe() calls) and keeps later
messages waiting. Open the
stream right after starting the client, so that nothing (retained messages) arrives before it.
Leaving the ``async with`` block stops the stream; a message taken and not finished then is
not acknowledged, and the server sends it again.
"""
from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._backend import Event, current

if TYPE_CHECKING:
    from .client import PushClient

__all__ = ["MessageStream"]

M = TypeVar("M")


class MessageStream(Generic[M]):
    """See the module docstring. Made by :meth:`PushClient.messages`."""

    def __init__(self, client: PushClient, manual_ack: bool) -> None:
        self._client = client
        self._manual = manual_ack
        self._open = False
        self._offered: Any = None  # the message waiting for the app
        self._taken: Any = None  # the message the app holds
        self._arrived: Event | None = None  # set when a message is offered (or on stop)
        self._finished_last = False  # the app finished with the message handed last

    async def __aenter__(self) -> MessageStream[M]:
        self._open = True
        self._client._add_stream(self)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop the stream (also when the client stops): an offered or held message is
        given back unacknowledged."""
        if not self._open:
            return
        self._open = False
        self._offered = self._taken = None  # given back: not acknowledged
        self._client._remove_stream(self)
        if self._arrived is not None:
            self._arrived.set()
        self._client._wake_session()

    def __aiter__(self) -> MessageStream[M]:
        return self

    async def __anext__(self) -> M:
        if self._taken is not None:
            if self._manual:
                raise RuntimeError("manual_ack=True: await messages.ack(message) before "
                                   "taking the next message")
            self._done_with_taken()
        while self._offered is None:
            if not self._open:
                self._client._raise_if_failed()
                raise StopAsyncIteration
            self._arrived = self._arrived or current().event()
            await self._arrived.wait()
            self._arrived = None
        message, self._offered = self._offered, None
        self._taken = message
        return message  # type: ignore[no-any-return]

    async def ack(self, message: M) -> None:
        """The app is done with ``message`` (the one last taken): record and acknowledge it.
        Only needed with ``manual_ack=True``; returns at once (the PUBACK follows)."""
        if message is not self._taken:
            raise ValueError("ack() takes the message the stream gave last")
        self._done_with_taken()
        await current().checkpoint()

    def _done_with_taken(self) -> None:
        self._taken = None
        self._finished_last = True
        self._client._wake_session()  # the connection records and acknowledges it

    # --- the connection's side ------------------------------------------------------------

    def hand(self, message: Any) -> None:
        """Give ``message`` to the app; the connection goes on meanwhile and looks at
        :attr:`holding` / :attr:`finished` when woken."""
        self._offered = message
        self._finished_last = False
        if self._arrived is not None:
            self._arrived.set()

    @property
    def holding(self) -> bool:
        return self._open and (self._offered is not None or self._taken is not None)

    @property
    def finished(self) -> bool:
        return self._finished_last
