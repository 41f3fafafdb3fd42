"""Broker mode as a full MQTT client: publish at QoS 0/1/2 with retain, runtime
subscribe/unsubscribe, will, persistent sessions reconciled with the config, the messages()
iterator — against a real Mosquitto, and against the scripted broker where a broker's
misbehaviour (redelivery, refusals) must be provoked on purpose."""
from __future__ import annotations

import random
from functools import partial

import pytest
import trio

from pushsdk import (
    BrokerConfig,
    BrokerMessage,
    ClientClosed,
    ConfigurationError,
    MemoryStateStore,
    PushClient,
    Subscription,
    SubscriptionRefused,
    Will,
    topic_matches,
)
from pushsdk.protocol import ConnAck, PubComp, Publish, PubRec, PubRel, Subscribe, Unsubscribe
from sdk_harness import MemoryNetwork, ScriptedBroker, mosquitto

pytestmark = pytest.mark.mosquitto
TIMEOUT = 10


def at(port: int, client_id: str, **kwargs) -> BrokerConfig:
    return BrokerConfig.from_url(f"mqtt://127.0.0.1:{port}", client_id=client_id, **kwargs)


async def collect(client: PushClient, count: int) -> list[BrokerMessage]:
    got = []
    async with client.messages() as messages:
        async for message in messages:
            got.append(message)
            if len(got) == count:
                break
    return got


async def test_publish_at_every_qos_with_retain(tmp_path):
    with mosquitto(tmp_path) as port:
        async with PushClient(at(port, "sub", topics=[("t/#", 2)])) as sub, \
                sub.messages() as messages, PushClient(at(port, "pub")) as pub:
            await sub.wait_connected()
            with trio.fail_after(TIMEOUT):
                for qos in (0, 1, 2):
                    await pub.publish(f"t/{qos}", f"m{qos}", qos=qos, retain=qos == 2)
                got = []
                async for message in messages:
                    got.append((message.topic, message.payload, message.qos, message.retain))
                    if len(got) == 3:
                        break
            assert got == [("t/0", b"m0", 0, False), ("t/1", b"m1", 1, False),
                           ("t/2", b"m2", 2, False)]
            stats = pub.statistics()
            assert stats.publishes_completed == 3 and stats.publishes_pending == 0
        # The retained message reaches a subscriber that comes later, flagged retained.
        async with PushClient(at(port, "late", topics=["t/#"], clean_session=True)) as late:
            with trio.fail_after(TIMEOUT):
                [message] = await collect(late, 1)
        assert (message.topic, message.payload, message.retain) == ("t/2", b"m2", True)


async def test_runtime_subscribe_and_unsubscribe(tmp_path):
    with mosquitto(tmp_path) as port:
        async with PushClient(at(port, "dyn", clean_session=True)) as client, \
                client.messages() as messages, PushClient(at(port, "pub")) as pub:
            with trio.fail_after(TIMEOUT):
                assert await client.subscribe("a/+", ("b", 2)) == (1, 2)
                await pub.publish("a/x", b"1", qos=1)
                assert (await messages.__anext__()).topic == "a/x"
                await client.unsubscribe("a/+")
                await pub.publish("a/x", b"2", qos=1)  # nobody subscribed: dropped
                await pub.publish("b", b"3", qos=2)
                message = await messages.__anext__()
            assert (message.topic, message.payload, message.qos) == ("b", b"3", 2)
            with pytest.raises(ConfigurationError,
                               match="uses '#' other than as the whole last level"):
                await client.subscribe("a/#/b")
            with pytest.raises(ConfigurationError, match="wildcard"):
                await client.publish("a/+", b"x")


async def test_refused_subscription_raises_and_is_not_kept(nursery, autojump_clock):
    net = MemoryNetwork(nursery)
    broker = ScriptedBroker(suback_code=0x80)
    net.serve("broker.test", 1883, broker.handle)
    config = BrokerConfig(host="broker.test", client_id="c", clean_session=True)
    async with PushClient(config, connector=net) as client:
        with pytest.raises(SubscriptionRefused, match=r"'secret/#'.*check its access rules"):
            await client.subscribe("secret/#")
        assert client.state.value == "connected"  # a refusal of a runtime request only
    # A refused *configured* subscription stops the client: it could never do its job.
    with pytest.raises(SubscriptionRefused):
        async with PushClient(BrokerConfig(host="broker.test", client_id="d", topics=["x"]),
                              connector=net) as client:
            await trio.sleep_forever()


async def test_will_is_published_when_the_client_vanishes(tmp_path):
    with mosquitto(tmp_path) as port:
        async with PushClient(at(port, "watcher", topics=["status/#"],
                                 clean_session=True)) as watcher, \
                watcher.messages() as messages:
            await watcher.wait_connected()
            doomed = PushClient(at(port, "doomed", will=Will("status/doomed", b"gone", qos=1)))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(doomed.run)
                await doomed.wait_connected()
                nursery.cancel_scope.cancel()  # the task dies: no DISCONNECT is sent
            with trio.fail_after(TIMEOUT):
                message = await messages.__anext__()
        assert (message.topic, message.payload, message.qos) == ("status/doomed", b"gone", 1)


async def test_a_clean_disconnect_sends_no_will(tmp_path):
    with mosquitto(tmp_path) as port:
        async with PushClient(at(port, "watcher", topics=["status/#"],
                                 clean_session=True)) as watcher, \
                watcher.messages() as messages, PushClient(at(port, "pub")) as pub:
            async with PushClient(at(port, "polite", will=Will("status/polite", b"gone"))) as c:
                await c.wait_connected()
            await pub.publish("status/marker", b"after", qos=1)
            with trio.fail_after(TIMEOUT):
                message = await messages.__anext__()
        assert message.topic == "status/marker"  # nothing from the will came before it


async def test_a_persistent_session_is_reconciled_with_the_config(tmp_path):
    store = MemoryStateStore()
    with mosquitto(tmp_path) as port:
        async with PushClient(at(port, "dev", topics=["keep", "drop"]),
                              state_store=store) as client:
            await client.wait_connected()
            await client.subscribe("runtime")  # not in the config: not kept at restart
        assert dict(store.state.subscriptions) == {"keep": 1, "drop": 1, "runtime": 1}
        # Restart with "drop" removed from the config: the broker's session still has it,
        # so the SDK unsubscribes it (and subscribes nothing that the broker already holds).
        async with PushClient(at(port, "dev", topics=["keep"]), state_store=store) as client, \
                client.messages() as messages, PushClient(at(port, "pub")) as pub:
            await client.wait_connected()
            with trio.fail_after(TIMEOUT):
                while dict(store.state.subscriptions) != {"keep": 1}:
                    await trio.sleep(0.01)
                for topic in ("drop", "runtime", "keep"):
                    await pub.publish(topic, topic, qos=1)
                message = await messages.__anext__()
        assert message.topic == "keep"


async def test_qos_2_inbound_is_exactly_once_across_reconnects(nursery, autojump_clock):
    # The broker sends a QoS 2 message, gets PUBREC, then the link breaks before PUBREL;
    # after reconnecting it sends the PUBLISH again (DUP) and then PUBREL, as MQTT lets it.
    net = MemoryNetwork(nursery)
    broker = ScriptedBroker(connack=lambda c, i: ConnAck(0, session_present=i > 0),
                            close_after=lambda i: 5.0 if i == 0 else None)
    net.serve("broker.test", 1883, broker.handle)
    store = MemoryStateStore()
    got = []
    config = BrokerConfig(host="broker.test", client_id="q2", topics=[("q/#", 2)])
    async with PushClient(config, connector=net, state_store=store, on_message=got.append,
                          rng=random.Random(1)) as client:
        await client.wait_connected()
        await broker.current.send(Publish("q/1", b"once", qos=2, packet_id=7))
        await broker.wait_for(lambda: broker.events(PubRec))
        assert store.state.received_qos2 == (7,)  # saved before PUBREC went out
        await broker.wait_for(lambda: len(broker.conns) == 2 and broker.online())
        await broker.current.send(Publish("q/1", b"once", qos=2, packet_id=7, dup=True))
        await broker.current.send(PubRel(7))
        await broker.wait_for(lambda: broker.events(PubComp, index=1))
    assert [m.payload for m in got] == [b"once"]
    assert [e.packet_id for e in broker.events(PubRec)] == [7, 7]
    assert store.state.received_qos2 == ()  # released, and that was saved before PUBCOMP


async def test_qos_2_outbound_resumes_at_pubrel_after_a_reconnect(nursery, autojump_clock):
    # Connection 0 answers PUBREC and then breaks; the SDK must continue with PUBREL on the
    # next connection (never a second PUBLISH, which the broker would take as new).
    net = MemoryNetwork(nursery)
    broker = ScriptedBroker(connack=lambda c, i: ConnAck(0, session_present=i > 0))
    net.serve("broker.test", 1883, broker.handle)
    store = MemoryStateStore()
    config = BrokerConfig(host="broker.test", client_id="p2")
    async with PushClient(config, connector=net, state_store=store,
                          rng=random.Random(1)) as client:
        await client.wait_connected()
        async with trio.open_nursery() as inner:
            inner.start_soon(partial(client.publish, "out", b"x", qos=2))

            await broker.wait_for(lambda: broker.events(Publish))
            packet_id = broker.events(Publish)[0].packet_id
            await broker.current.send(PubRec(packet_id))
            await broker.wait_for(lambda: broker.events(PubRel))
            assert store.state.outbound[0]["stage"] == 1  # persisted before PUBREL
            await trio.aclose_forcefully(broker.current.stream)
            await broker.wait_for(lambda: len(broker.conns) == 2 and broker.online()
                                  and broker.events(PubRel, index=1))
            await broker.current.send(PubComp(packet_id))
    assert len(broker.events(Publish)) == 1 and len(broker.events(PubRel)) == 2
    assert store.state.outbound == ()


async def test_manual_ack_holds_the_puback_until_the_app_is_done(nursery, autojump_clock):
    net = MemoryNetwork(nursery)
    broker = ScriptedBroker()
    net.serve("broker.test", 1883, broker.handle)
    config = BrokerConfig(host="broker.test", client_id="m", topics=["t"])
    from pushsdk.protocol import PubAck

    async with PushClient(config, connector=net) as client, \
            client.messages(manual_ack=True) as messages:
        await client.wait_connected()
        await broker.current.send(Publish("t", b"1", qos=1, packet_id=1))
        message = await messages.__anext__()
        await trio.sleep(30)
        assert broker.events(PubAck) == []  # the app still holds it
        with pytest.raises(RuntimeError, match=r"await messages.ack\(message\) before"):
            await messages.__anext__()
        await messages.ack(message)
        await broker.wait_for(lambda: broker.events(PubAck))
    # Closed: the iterator ends, and the client refuses more work.
    with pytest.raises(ClientClosed):
        await client.publish("t", b"late")


async def test_messages_on_filters_no_longer_wanted_are_not_dispatched(nursery,
                                                                       autojump_clock):
    net = MemoryNetwork(nursery)
    broker = ScriptedBroker()
    net.serve("broker.test", 1883, broker.handle)
    got = []
    config = BrokerConfig(host="broker.test", client_id="f", topics=["a/#"])
    async with PushClient(config, connector=net, on_message=got.append) as client:
        await client.wait_connected()
        await broker.current.send(Publish("old/topic", b"x", qos=1, packet_id=1))
        await broker.current.send(Publish("a/b", b"y", qos=1, packet_id=2))
        await broker.wait_for(lambda: len(broker.events(Publish)) == 0 and got)
    assert [m.topic for m in got] == ["a/b"]
    assert broker.events(Subscribe)[0].subscriptions == (("a/#", 1),)
    assert broker.events(Unsubscribe) == []


def test_topic_matching_follows_mqtt():
    assert topic_matches("a/#", "a") and topic_matches("a/#", "a/b/c")
    assert topic_matches("a/+/c", "a/b/c") and not topic_matches("a/+", "a/b/c")
    assert topic_matches("#", "x") and not topic_matches("#", "$SYS/x")
    assert not topic_matches("+/x", "$SYS/x") and topic_matches("$SYS/#", "$SYS/x")
    assert Subscription("a/+/#").topic_filter == "a/+/#"
