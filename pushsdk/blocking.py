"""A blocking facade for programs without an event loop (like paho's ``loop_start``).

::

    with BlockingPushClient(BrokerConfig.from_url("mqtt://127.0.0.1:1883",
                                                  client_id="sensor-7")) as client:
        client.wait_connected(timeout=10)
        client.publish("sensors/7/temp", b"21.5", qos=1)
        message = client.get_message(timeout=30)

The client runs in a background thread with its own trio event loop; every method hands its
work to that loop and waits for the result. Callbacks given to the constructor run in that
thread (keep them short or hand work to your own threads). :meth:`get_message` takes the next
message; it is acknowledged when the next one is asked for (or at close), after your code is
done with it, as with ``PushClient.messages()``.
"""
from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import trio

from .client import PushClient
from .config import BrokerConfig, ClientStatistics, ServerConfig, Subscription
from .errors import ClientClosed, ConnectTimeout, PushError
from .messages import MessageStream

__all__ = ["BlockingPushClient"]

T = TypeVar("T")


class BlockingPushClient:
    """:class:`PushClient` in a background thread. Takes the same arguments."""

    def __init__(self, config: ServerConfig | BrokerConfig, **kwargs: Any) -> None:
        self._client = PushClient(config, **kwargs)  # validates everything here, at once
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._started = threading.Event()
        self._stop: trio.Event | None = None
        self._stream: MessageStream[Any] | None = None
        self._failure: BaseException | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread and the client in it."""
        if self._thread is not None:
            raise RuntimeError("a BlockingPushClient can be started only once")
        self._thread = threading.Thread(target=self._thread_main, name="pushsdk",
                                        daemon=True)
        self._thread.start()
        self._started.wait()
        if self._token is None:
            self._reraise()

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            self._failure = exc
        finally:
            self._started.set()

    async def _main(self) -> None:
        self._stop = trio.Event()
        async with self._client as client, client.messages() as stream:
            self._stream = stream
            self._token = trio.lowlevel.current_trio_token()
            self._started.set()
            await self._stop.wait()

    def close(self) -> None:
        """Disconnect and stop the thread; raises the client's permanent failure, if any."""
        if self._thread is None:
            return
        if self._token is not None and self._stop is not None:
            try:
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join()
        if self._failure is not None and not isinstance(self._failure, ClientClosed):
            self._reraise()

    def __enter__(self) -> BlockingPushClient:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- calls into the loop --------------------------------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._token is None:
            raise ClientClosed("start() the BlockingPushClient first")
        try:
            return trio.from_thread.run(functools.partial(fn, *args, **kwargs),
                                        trio_token=self._token)
        except trio.RunFinishedError:
            self._reraise()
            raise ClientClosed("the push client is closed") from None

    def _reraise(self) -> None:
        failure = self._failure
        if isinstance(failure, BaseExceptionGroup) and len(failure.exceptions) == 1:
            failure = failure.exceptions[0]
        if failure is not None:
            raise failure

    def wait_connected(self, timeout: float | None = None) -> None:
        """Block until connected; raises like :meth:`PushClient.wait_connected`."""
        self._call(self._client.wait_connected, timeout)

    def publish(self, topic: str, payload: bytes | str = b"", *, qos: int = 0,
                retain: bool = False) -> None:
        """Block until published (written for QoS 0, acknowledged for QoS 1/2)."""
        self._call(self._client.publish, topic, payload, qos=qos, retain=retain)

    def subscribe(self, *subscriptions: str | Subscription | tuple[str, int],
                  qos: int = 1) -> tuple[int, ...]:
        result: tuple[int, ...] = self._call(self._client.subscribe, *subscriptions, qos=qos)
        return result

    def unsubscribe(self, *topic_filters: str) -> None:
        self._call(self._client.unsubscribe, *topic_filters)

    def get_message(self, timeout: float | None = None) -> Any:
        """The next message (a BrokerMessage or PushMessage); the previous one is
        acknowledged first. Raises :class:`ConnectTimeout` if none comes in ``timeout`` s."""
        return self._call(self._next_message, math.inf if timeout is None else timeout)

    async def _next_message(self, timeout: float) -> Any:
        stream = self._stream
        assert stream is not None
        with trio.move_on_after(timeout):
            return await stream.__anext__()
        raise ConnectTimeout(f"no message within {timeout:g} s")

    def statistics(self) -> ClientStatistics:
        result: ClientStatistics = self._call(self._sync_statistics)
        return result

    async def _sync_statistics(self) -> ClientStatistics:
        return self._client.statistics()

    @property
    def client(self) -> PushClient:
        """The underlying :class:`PushClient` (use its methods only from its thread)."""
        return self._client

    @property
    def error(self) -> PushError | None:
        return self._client.error
