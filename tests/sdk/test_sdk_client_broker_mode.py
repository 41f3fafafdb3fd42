"""Broker mode: a plain MQTT 3.1.1 broker, static identity and topics."""
import random

import pytest
import trio

from pushsdk import Backoff, BrokerConfig, BrokerMessage, MemoryStateStore, PushClient
from pushsdk.protocol import ConnAck, Connect, PubAck, PubComp, Publish, PubRec, PubRel, Subscribe
from sdk_harness import MemoryNetwork, ScriptedBroker


def setup(nursery, **kwargs):
    net = MemoryNetwork(nursery)
    broker = ScriptedBroker(**kwargs)
    net.serve("broker.test", 1883, broker.handle)
    return net, broker


def config(**kwargs):
    kwargs.setdefault("topics", ["sensors/#", "alerts"])
    return BrokerConfig.from_url("mqtt://broker.test", client_id="dev-7", **kwargs)


async def test_connect_subscribe_and_dispatch(nursery, autojump_clock):
    net, broker = setup(nursery)
    got = []
    async with PushClient(config(username="u", password="p", keepalive=45), connector=net,
                          on_message=got.append) as c:
        await c.wait_connected()
        await broker.current.send(Publish("sensors/1", b"21.5", qos=1, packet_id=1))
        await broker.current.send(Publish("alerts", "héllo".encode(), qos=0, retain=True))
        await broker.wait_for(lambda: broker.events(PubAck))
        await trio.sleep(1)
        stats = c.statistics()
    connect = broker.events(Connect)[0]
    assert (connect.client_id, connect.username, connect.password) == ("dev-7", "u", b"p")
    assert (connect.keepalive, connect.clean_session) == (45, False)
    assert broker.events(Subscribe)[0].subscriptions == (("sensors/#", 1), ("alerts", 1))
    assert got == [
        BrokerMessage("sensors/1", b"21.5", qos=1),
        BrokerMessage("alerts", "héllo".encode(), qos=0, retain=True),
    ]
    assert got[1].text == "héllo"
    assert [e.packet_id for e in broker.events(PubAck)] == [1]  # QoS 0 is not acknowledged
    assert stats.messages_dispatched == 2


async def test_dup_redelivery_is_dispatched_once_but_repeats_are_not_dropped(
        nursery, autojump_clock):
    net, broker = setup(nursery)
    store = MemoryStateStore()
    got = []
    async with PushClient(config(), connector=net, state_store=store,
                          on_message=got.append) as c:
        await c.wait_connected()
        await broker.current.send(Publish("alerts", b"fire", qos=1, packet_id=3))
        await broker.wait_for(lambda: broker.events(PubAck))
    async with PushClient(config(), connector=net, state_store=store,
                          on_message=got.append) as c:
        await c.wait_connected()
        # The PUBACK was lost: the broker resends with DUP=1 ...
        await broker.current.send(Publish("alerts", b"fire", qos=1, packet_id=3, dup=True))
        # ... and later a genuinely new message that happens to look the same.
        await broker.current.send(Publish("alerts", b"fire", qos=1, packet_id=3))
        await broker.wait_for(lambda: len(broker.events(PubAck, index=1)) == 2)
        stats = c.statistics()
    assert [m.payload for m in got] == [b"fire", b"fire"]
    assert not any(m.dup for m in got)
    assert stats.duplicates == 1


async def test_qos2_flow(nursery, autojump_clock):
    net, broker = setup(nursery)
    got = []
    async with PushClient(config(qos=2), connector=net, on_message=got.append) as c:
        await c.wait_connected()
        await broker.current.send(Publish("alerts", b"x", qos=2, packet_id=11))
        await broker.wait_for(lambda: broker.events(PubRec))
        await broker.current.send(PubRel(11))
        await broker.wait_for(lambda: broker.events(PubComp))
    assert broker.events(Subscribe)[0].subscriptions[0] == ("sensors/#", 2)
    assert [m.payload for m in got] == [b"x"]
    assert broker.events(PubRec)[0].packet_id == 11 and broker.events(PubComp)[0].packet_id == 11


async def test_bad_credentials_wait_the_maximum(nursery, autojump_clock):
    net, broker = setup(nursery, connack=lambda c, i: ConnAck(4 if i == 0 else 0))
    async with PushClient(config(), connector=net, backoff=Backoff(max_delay=120),
                          rng=random.Random(0)) as c:
        await c.wait_connected()
        assert trio.current_time() == 120


def test_broker_urls_and_validation():
    assert (BrokerConfig.from_url("mqtts://b:1", client_id="c", topics=["t"]).tls) is True
    c = BrokerConfig.from_url("mqtts://b", client_id="c", topics=["t"])
    assert (c.host, c.port, c.tls) == ("b", 8883, True)
    for url in ("http://b", "mqtt://", "mqtt://b:0x"):
        with pytest.raises(ValueError):
            BrokerConfig.from_url(url, client_id="c", topics=["t"])
    with pytest.raises(ValueError):
        BrokerConfig(host="b", client_id="c", topics=[])
    with pytest.raises(ValueError):
        BrokerConfig(host="b", client_id="c", topics=["t"], keepalive=0)
    with pytest.raises(ValueError):
        BrokerConfig(host="b", client_id="", topics=["t"])
