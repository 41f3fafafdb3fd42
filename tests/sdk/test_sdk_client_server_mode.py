"""Virtual-time tests of server mode: registration, tokens, delivery guarantees, receipts."""
import base64
import json
import random

import attrs
import pytest
import trio

from pushsdk import (
    ConfigurationError,
    RegistrationRefused,
    ClientState,
    FileStateStore,
    FixedStrategy,
    MemoryStateStore,
    PushClient,
    SdkState,
    ServerConfig,
    StaticKeyStore,
    VirtualClock,
)
from pushsdk.protocol import Connect, PubAck, Publish, Subscribe
from sdk_harness import (
    APP_KEY,
    EPOCH,
    MQTT_HOST,
    MQTT_PORT,
    SERVER_URL,
    MemoryNetwork,
    Registrar,
    ScriptedBroker,
    push_payload,
    server_token_check,
)

INBOX = f"push/{APP_KEY}/reg-dev-1"


def setup(nursery, registrar=None, **broker_kwargs):
    net = MemoryNetwork(nursery)
    registrar = registrar or Registrar()
    broker = ScriptedBroker(**broker_kwargs)
    net.serve("push.test", 8480, registrar.handle)
    net.serve(MQTT_HOST, MQTT_PORT, broker.handle)
    return net, registrar, broker


def make_client(net, **kwargs):
    config = ServerConfig(server_url=SERVER_URL, app_key=APP_KEY, device_id="dev-1",
                          alias="alice", tags=["beta"])
    kwargs.setdefault("strategy", FixedStrategy(300))
    kwargs.setdefault("rng", random.Random(1))
    kwargs.setdefault("clock", VirtualClock(EPOCH))
    return PushClient(config, connector=net, **kwargs)


def publish(msg_id, packet_id, kind="notification", dup=False, **extra):
    return Publish(INBOX, push_payload(msg_id, kind, **extra), qos=1, packet_id=packet_id,
                   dup=dup)


async def test_registers_connects_and_subscribes(nursery, autojump_clock):
    net, registrar, broker = setup(nursery)
    tokens = []
    store = MemoryStateStore()
    async with make_client(net, state_store=store, on_new_token=tokens.append) as c:
        await c.wait_connected()
        assert c.registration.registration_id == "reg-dev-1"
        assert c.token == "tok-1"
    assert tokens == ["tok-1"]
    body = registrar.requests[0][1]
    # The installation's Ed25519 public key goes with it (the key is in the state file).
    assert body == {"device_id": "dev-1", "platform": "android", "alias": "alice",
                    "tags": ["beta"], "device_key": store.state.device_key.public}
    assert len(base64.urlsafe_b64decode(body["device_key"] + "=")) == 32
    connect = broker.events(Connect)[0]
    assert (connect.client_id, connect.username, connect.password) == (
        "reg-dev-1", APP_KEY, b"tok-1")
    assert connect.clean_session is False and connect.keepalive == 300
    assert broker.events(Subscribe)[0].subscriptions == ((INBOX, 1),)
    assert store.state.registration.token == "tok-1"


async def test_stored_registration_is_reused_until_the_token_expires(nursery, autojump_clock):
    net, registrar, broker = setup(nursery, registrar=Registrar(token_ttl=1000))
    store = MemoryStateStore()
    tokens = []
    async with make_client(net, state_store=store) as c:
        await c.wait_connected()
    async with make_client(net, state_store=store, on_new_token=tokens.append) as c:
        await c.wait_connected()  # token valid: no registration
    assert len(registrar.requests) == 1 and tokens == []
    await trio.sleep(700)  # within the 300 s refresh margin of expiry
    async with make_client(net, state_store=store, on_new_token=tokens.append) as c:
        await c.wait_connected()
        assert c.statistics().registrations == 1
    assert len(registrar.requests) == 2 and tokens == ["tok-2"]
    assert broker.events(Connect)[-1].password == b"tok-2"


async def test_registration_for_another_device_is_not_reused(nursery, autojump_clock):
    net, registrar, _ = setup(nursery)
    store = MemoryStateStore()
    async with make_client(net, state_store=store) as c:
        await c.wait_connected()
    other = ServerConfig(server_url=SERVER_URL, app_key=APP_KEY, device_id="dev-2")
    async with PushClient(other, connector=net, state_store=store,
                          clock=VirtualClock(EPOCH)) as c:
        await c.wait_connected()
        assert c.registration.registration_id == "reg-dev-2"
    assert len(registrar.requests) == 2


async def test_connack_4_registers_again_at_once(nursery, autojump_clock):
    valid = {"tok-1"}
    net, registrar, broker = setup(nursery, connack=server_token_check(valid))
    store = MemoryStateStore()
    async with make_client(net, state_store=store) as c:
        await c.wait_connected()
    await trio.sleep(10)
    valid.clear()  # e.g. the server forgot the token
    valid.add("tok-2")
    tokens = []
    async with make_client(net, state_store=store, on_new_token=tokens.append) as c:
        await c.wait_connected()
        assert trio.current_time() == 10  # no backoff between the refusal and the retry
    assert tokens == ["tok-2"]
    assert [e.password for e in broker.events(Connect)] == [b"tok-1", b"tok-1", b"tok-2"]
    assert store.state.registration.token == "tok-2"


async def test_connack_4_right_after_registering_backs_off(nursery, autojump_clock):
    net, registrar, broker = setup(nursery, connack=server_token_check(set()))
    async with make_client(net) as c:
        await registrar.wait_for(lambda: len(registrar.requests) == 3)
        assert c.state in (ClientState.REGISTERING, ClientState.CONNECTING)
    times = [t for t, host, _, _ in net.attempts if host == "push.test"]
    assert times[0] == 0 and times[1] > 0  # a fresh token refused: not a tight loop


async def test_registration_errors_back_off(nursery, autojump_clock):
    registrar = Registrar(error=(503, b'{"error": {"code": "down", "message": "later"}}'))
    net, registrar, broker = setup(nursery, registrar=registrar)
    reasons = []
    async with make_client(net, on_state_change=lambda o, n, r: reasons.append((n, r))) as c:
        await registrar.wait_for(lambda: len(registrar.requests) == 3)
        registrar.error = None
        await c.wait_connected()
    waiting = [r for n, r in reasons if n is ClientState.WAITING]
    assert waiting[0] == "registration failed: HTTP 503 down: later"
    assert waiting[0].code == "registration" and waiting[0].error.status == 503
    assert c.statistics().consecutive_failures == 0
    # A 401 (bad app key) cannot fix itself: the client stops, and says why.
    registrar = Registrar(app_key="other")
    net, registrar, broker = setup(nursery, registrar=registrar)
    with pytest.raises(RegistrationRefused) as info:
        async with make_client(net) as c:
            await c.wait_connected()
    assert info.value.status == 401 and "check the app key" in str(info.value)
    assert len(registrar.requests) == 1 and c.state is ClientState.CLOSED
    assert c.statistics().last_reason == "registration_refused"


async def test_dispatch_to_callbacks_and_puback_after_the_callback(nursery, autojump_clock):
    net, _, broker = setup(nursery)
    got = []

    async def slow_notification(msg):
        got.append(("notification", msg.msg_id, msg.notification["title"], trio.current_time()))
        await trio.sleep(5)

    async with make_client(
        net, on_notification=slow_notification,
        on_message=lambda m: got.append(("message", m.msg_id, m.message, trio.current_time())),
        on_deleted=lambda m: got.append(("deleted", m.msg_id, m.count, trio.current_time())),
    ) as c:
        await c.wait_connected()
        await trio.sleep(10)
        await broker.current.send(publish("m1", 1))
        await broker.current.send(publish("m2", 2, kind="message"))
        await broker.current.send(publish("m3", 3, kind="deleted", count=7))
        await broker.wait_for(lambda: len(broker.events(PubAck)) == 3)
        stats = c.statistics()
    assert got == [
        ("notification", "m1", "Hi", 10),
        ("message", "m2", {"data": {"n": "m2"}}, 15),
        ("deleted", "m3", 7, 15),
    ]
    # Each PUBACK only after its callback returned: m1's at 15, not 10.
    acks = [(t, e.packet_id) for t, _, e in broker.log if isinstance(e, PubAck)]
    assert acks == [(15, 1), (15, 2), (15, 3)]
    assert (stats.messages_received, stats.messages_dispatched, stats.duplicates) == (3, 3, 0)


async def test_raising_callback_does_not_stop_others(nursery, autojump_clock):
    net, _, broker = setup(nursery)
    seen = []

    def flaky(msg):
        seen.append(msg.msg_id)
        if msg.msg_id == "bad":
            raise RuntimeError("app bug")

    async with make_client(net, on_notification=flaky, on_message=flaky) as c:
        await c.wait_connected()
        await broker.current.send(publish("bad", 1))
        await broker.current.send(publish("good", 2, kind="message"))
        await broker.wait_for(lambda: len(broker.events(PubAck)) == 2)
        stats = c.statistics()
        assert c.state is ClientState.CONNECTED
    assert seen == ["bad", "good"]
    assert stats.callback_errors == 1 and stats.messages_dispatched == 2
    assert len(broker.conns) == 1


async def test_malformed_push_is_acknowledged_and_dropped(nursery, autojump_clock):
    net, _, broker = setup(nursery)
    seen = []
    async with make_client(net, on_message=seen.append) as c:
        await c.wait_connected()
        await broker.current.send(Publish(INBOX, b"{not json", qos=1, packet_id=9))
        await broker.current.send(Publish(INBOX, b'{"kind": "message"}', qos=1, packet_id=10))
        await broker.wait_for(lambda: len(broker.events(PubAck)) == 2)
        assert c.statistics().malformed_messages == 2
    assert seen == []


async def test_duplicate_redelivery_across_restart_is_dispatched_once(nursery, autojump_clock):
    # Connection 0 loses the PUBACK: the "crash" happens after the callback returned and the
    # msg_id was saved, before the server got the acknowledgement.
    net, _, broker = setup(nursery)
    store = MemoryStateStore()
    seen = []
    async with make_client(net, state_store=store, on_notification=seen.append) as c:
        await c.wait_connected()
        await broker.current.send(publish("m1", 1))
        await broker.wait_for(lambda: broker.events(PubAck))
    assert "m1" in store.state.recent_msg_ids
    # A new client process with the same state: the server redelivers m1 (DUP=1), then m2.
    async with make_client(net, state_store=store, on_notification=seen.append) as c:
        await c.wait_connected()
        await broker.current.send(publish("m1", 1, dup=True))
        await broker.current.send(publish("m2", 2))
        await broker.wait_for(lambda: len(broker.events(PubAck, index=1)) == 2)
        stats = c.statistics()
    assert [m.msg_id for m in seen] == ["m1", "m2"]
    assert (stats.duplicates, stats.messages_dispatched) == (1, 1)
    assert [e.packet_id for e in broker.events(PubAck, index=1)] == [1, 2]  # dup acked too


async def test_duplicates_across_restart_with_a_real_state_file(nursery, tmp_path):
    # Real time, real encrypted file; memory streams keep it fast.
    net, _, broker = setup(nursery)
    seen = []

    def store():
        return FileStateStore(tmp_path / "state.bin", StaticKeyStore(bytes(32)))

    for attempt in range(2):
        async with make_client(net, state_store=store(), on_notification=seen.append,
                               clock=VirtualClock(EPOCH)) as c:
            await c.wait_connected()
            await broker.current.send(publish("m1", 5, dup=attempt > 0))
            await broker.wait_for(lambda n=attempt + 1: len(broker.events(PubAck)) == n)
    assert [m.msg_id for m in seen] == ["m1"]
    assert len(broker.events(Connect)) == 2
    loaded = await store().load()
    assert loaded.registration.registration_id == "reg-dev-1"
    assert loaded.recent_msg_ids == ("m1",)


async def test_cancelled_callback_leaves_the_message_unacknowledged(nursery, autojump_clock):
    net, _, broker = setup(nursery)
    store = MemoryStateStore()

    async def stuck(msg):
        await trio.sleep_forever()

    async with make_client(net, state_store=store, on_notification=stuck) as c:
        await c.wait_connected()
        await broker.current.send(publish("m1", 1))
        await trio.sleep(1)
    assert broker.events(PubAck) == []
    assert "m1" not in store.state.recent_msg_ids  # it will be redelivered and dispatched


async def test_closing_right_after_the_callback_still_acknowledges(nursery, autojump_clock):
    net, _, broker = setup(nursery)
    done = trio.Event()
    async with make_client(net, on_notification=lambda m: done.set()) as c:
        await c.wait_connected()
        await broker.current.send(publish("m1", 1))
        await done.wait()
        await c.aclose()  # as `pushsdk listen --exit-after 1` does
    assert [e.packet_id for e in broker.events(PubAck)] == [1]


async def test_receipts_queue_while_offline_and_survive_reconnects(nursery, autojump_clock):
    # Connection 0 does not acknowledge receipts; connection 1 does.
    net, _, broker = setup(nursery, ack_publishes=lambda i: i > 0)
    async with make_client(net, network_key=None) as c:
        await c.send_receipt("m1", "opened")  # offline: queued
        assert c.statistics().receipts_pending == 1
        c.notify_network_changed("wifi")
        await c.wait_connected()
        await broker.wait_for(lambda: broker.events(Publish))
        await c.send_receipt("m2", "dismissed")
        await broker.wait_for(lambda: len(broker.events(Publish)) == 2)
        c.notify_network_changed("cell", "cellular")
        await broker.wait_for(lambda: len(broker.events(PubAck)) == 0 and
                              len(broker.events(Publish, index=1)) == 2)
        await trio.sleep(1)
        stats = c.statistics()
        with pytest.raises(ValueError):
            await c.send_receipt("m3", "liked")
    first = broker.events(Publish, index=0)
    assert [(p.topic, json.loads(p.payload), p.qos, p.dup) for p in first] == [
        (f"rcpt/{APP_KEY}/reg-dev-1", {"msg_id": "m1", "event": "opened"}, 1, False),
        (f"rcpt/{APP_KEY}/reg-dev-1", {"msg_id": "m2", "event": "dismissed"}, 1, False),
    ]
    again = broker.events(Publish, index=1)
    assert [attrs.evolve(p, dup=False) for p in again] == first and all(p.dup for p in again)
    assert stats.receipts_pending == 0 and stats.receipts_acknowledged == 2


async def test_receipts_need_server_mode(nursery, autojump_clock):
    from pushsdk import BrokerConfig

    c = PushClient(BrokerConfig(host="h", client_id="c", topics=["t"]),
                   connector=MemoryNetwork(nursery))
    with pytest.raises(ConfigurationError):
        await c.send_receipt("m", "opened")


async def test_loaded_state_keeps_unrelated_parts(nursery, autojump_clock):
    net, _, _ = setup(nursery)
    store = MemoryStateStore(SdkState(recent_msg_ids=("old",),
                                      heartbeat_memory=(("x", {"a": 1}),)))
    async with make_client(net, state_store=store) as c:
        await c.wait_connected()
    assert store.state.recent_msg_ids == ("old",)
    assert store.state.memory_for("x") == {"a": 1}
    assert store.state.registration is not None


async def test_state_save_failure_does_not_stop_delivery(nursery, autojump_clock):
    class FullDisk(MemoryStateStore):
        async def save(self, state):
            raise OSError(28, "No space left on device")

    net, _, broker = setup(nursery)
    seen = []
    async with make_client(net, state_store=FullDisk(), on_notification=seen.append) as c:
        await c.wait_connected()
        await broker.current.send(publish("m1", 1))
        await broker.wait_for(lambda: broker.events(PubAck))
        stats = c.statistics()
    assert [m.msg_id for m in seen] == ["m1"]
    assert stats.state_save_errors == 2  # after registering, after m1


def test_config_validation():
    with pytest.raises(ValueError):
        ServerConfig(server_url="ftp://x", app_key="k", device_id="d")
    with pytest.raises(ValueError):
        ServerConfig(server_url=SERVER_URL, app_key="", device_id="d")
    with pytest.raises(ValueError):
        PushClient(ServerConfig(server_url=SERVER_URL, app_key="k", device_id="d"),
                   network_type="satellite")
