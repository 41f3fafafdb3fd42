"""The same PushClient inside ``asyncio.run()``, and the blocking facade (a thread of its
own): callbacks on the host loop, publish/subscribe at every QoS, errors that surface, and
exactly-once QoS 2 delivery across a reconnect, against a real Mosquitto and against the
scripted broker (served over loopback TCP by trio in a thread of its own)."""
from __future__ import annotations

import asyncio
import functools
import subprocess
import threading
from collections.abc import Iterator

import pytest
import trio

from pushsdk import (
    ConnectionRefused,
    BlockingPushClient,
    BrokerConfig,
    ConnectTimeout,
    MemoryStateStore,
    PushClient,
)
from pushsdk.protocol import ConnAck, PubComp, Publish, PubRec, PubRel
from sdk_harness import ScriptedBroker, mosquitto

pytestmark = pytest.mark.mosquitto
TIMEOUT = 10


def at(port: int, client_id: str, **kwargs) -> BrokerConfig:
    return BrokerConfig.from_url(f"mqtt://127.0.0.1:{port}", client_id=client_id, **kwargs)


def test_asyncio_publish_subscribe_and_callbacks_on_the_host_loop(tmp_path):
    async def main(port: int) -> None:
        loop = asyncio.get_running_loop()
        seen_on: list[object] = []

        def on_message(message):
            seen_on.append(asyncio.get_running_loop())

        async with PushClient(at(port, "aio-sub", topics=[("a/#", 2)]),
                              on_message=on_message) as sub, sub.messages() as messages, \
                PushClient(at(port, "aio-pub")) as pub:
            await sub.wait_connected(timeout=TIMEOUT)
            assert await sub.subscribe(("b", 1)) == (1,)
            async with asyncio.timeout(TIMEOUT):
                for qos in (0, 1, 2):
                    await pub.publish(f"a/{qos}", f"m{qos}", qos=qos)
                await pub.publish("b", b"x", qos=1, retain=True)
                got = []
                async for message in messages:
                    got.append((message.topic, message.qos))
                    if len(got) == 4:
                        break
        assert got == [("a/0", 0), ("a/1", 1), ("a/2", 2), ("b", 1)]
        assert seen_on == [loop] * 4

    with mosquitto(tmp_path) as port:
        asyncio.run(main(port))


def test_asyncio_errors_surface(tmp_path):
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "user", "right"],
                   check=True, capture_output=True)

    async def main(port: int) -> None:
        # Mosquitto answers a wrong password with CONNACK 5 (4 elsewhere): either way a
        # permanent, typed error that ends wait_connected(), not a retry for ever.
        with pytest.raises(ConnectionRefused, match="check username and password"):
            async with PushClient(at(port, "aio", username="user", password="wrong")) as c:
                await c.wait_connected()
        async with PushClient(at(port, "aio", username="user", password="right")) as c:
            await c.wait_connected(timeout=TIMEOUT)
        # Nobody listens on a closed port: transient, retried; a timeout says why.
        async with PushClient(at(free, "aio")) as c:
            with pytest.raises(ConnectTimeout, match="Connection refused"):
                await c.wait_connected(timeout=2)

    from support.ports import free_port
    free = free_port()
    with mosquitto(tmp_path, f"allow_anonymous false\npassword_file {passwords}\n") as port:
        asyncio.run(main(port))


@pytest.fixture
def tcp_broker() -> Iterator[tuple[ScriptedBroker, int, trio.lowlevel.TrioToken]]:
    """A ScriptedBroker on loopback TCP, run by trio in a thread of its own."""
    broker = ScriptedBroker(connack=lambda c, i: ConnAck(0, session_present=i > 0))
    ready = threading.Event()
    found: dict[str, object] = {}

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(
                trio.serve_tcp, broker.handle, 0, host="127.0.0.1"))
            found["port"] = listeners[0].socket.getsockname()[1]
            found["token"] = trio.lowlevel.current_trio_token()
            found["stop"] = nursery.cancel_scope
            ready.set()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    ready.wait(TIMEOUT)
    token = found["token"]
    try:
        yield broker, found["port"], token
    finally:
        trio.from_thread.run_sync(found["stop"].cancel, trio_token=token)
        thread.join(TIMEOUT)


def test_asyncio_qos_2_is_exactly_once_across_a_reconnect(tcp_broker):
    broker, port, token = tcp_broker

    def on_broker(fn, *args):
        return trio.from_thread.run(fn, *args, trio_token=token)

    async def until(predicate) -> None:
        async with asyncio.timeout(TIMEOUT):
            while not predicate():
                await asyncio.sleep(0.01)

    async def main() -> list[bytes]:
        store = MemoryStateStore()
        got: list[bytes] = []
        config = at(port, "aio-q2", topics=[("q", 2)])
        async with PushClient(config, state_store=store,
                              on_message=lambda m: got.append(m.payload)) as client:
            await client.wait_connected(timeout=TIMEOUT)
            await asyncio.to_thread(on_broker, broker.current.send,
                                    Publish("q", b"once", qos=2, packet_id=9))
            await until(lambda: broker.events(PubRec))
            assert store.state.received_qos2 == (9,)
            await asyncio.to_thread(on_broker, trio.aclose_forcefully, broker.current.stream)
            await until(lambda: len(broker.conns) == 2 and broker.online())
            for event in (Publish("q", b"once", qos=2, packet_id=9, dup=True), PubRel(9)):
                await asyncio.to_thread(on_broker, broker.current.send, event)
            await until(lambda: broker.events(PubComp, index=1))
        assert store.state.received_qos2 == ()
        return got

    assert asyncio.run(main()) == [b"once"]


def test_blocking_facade(tmp_path):
    with mosquitto(tmp_path) as port:
        with BlockingPushClient(at(port, "blk", topics=["x/#"])) as client:
            client.wait_connected(timeout=TIMEOUT)
            assert client.subscribe(("y", 2)) == (2,)
            client.publish("x/1", b"one", qos=1)
            client.publish("y", "two", qos=2)
            first = client.get_message(timeout=TIMEOUT)
            second = client.get_message(timeout=TIMEOUT)
            assert [(m.topic, m.payload) for m in (first, second)] == [("x/1", b"one"),
                                                                       ("y", b"two")]
            with pytest.raises(ConnectTimeout, match="no message within 0.2 s"):
                client.get_message(timeout=0.2)
            assert client.statistics().publishes_completed == 2
        with pytest.raises(ConnectionRefused):
            with BlockingPushClient(at(free_port_refusing(tmp_path), "b2",
                                       username="u", password="p")) as bad:
                bad.wait_connected(timeout=TIMEOUT)


def free_port_refusing(tmp_path) -> int:
    """A Mosquitto that knows no users (kept running for the rest of the test)."""
    passwords = tmp_path / "none"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "other", "x"],
                   check=True, capture_output=True)
    manager = mosquitto(tmp_path, f"allow_anonymous false\npassword_file {passwords}\n")
    port = manager.__enter__()
    _KEEP.append(manager)
    return port


_KEEP: list[object] = []


@pytest.fixture(autouse=True)
def _stop_kept():
    yield
    while _KEEP:
        _KEEP.pop().__exit__(None, None, None)
