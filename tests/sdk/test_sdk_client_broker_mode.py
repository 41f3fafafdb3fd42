"""Broker mode: a plain MQTT 3.1.1 broker, static identity and topics."""
import random

import pytest
import trio

from pushsdk import (
    AuthenticationRefused,
    BrokerConfig,
    BrokerMessage,
    ClientState,
    ConfigurationError,
    ConnectTimeout,
    DeviceStatus,
    MemoryStateStore,
    PushClient,
    ServerConfig,
    Subscription,
    TokenRejected,
    TransportError,
    Will,
)
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


async def test_bad_credentials_stop_the_client_with_a_typed_error(nursery, autojump_clock):
    net, broker = setup(nursery, connack=lambda c, i: ConnAck(4))
    changes = []
    with pytest.raises(AuthenticationRefused) as info:
        async with PushClient(config(username="u", password="wrong"), connector=net,
                              on_state_change=lambda o, n, r: changes.append((n, r))) as c:
            await c.wait_connected()
    assert str(info.value) == ("broker.test:1883 refused the user name or password (CONNACK 4): "
                               "check username and password")
    assert info.value.return_code == 4 and not isinstance(info.value, TokenRejected)
    assert len(net.attempts) == 1 and trio.current_time() == 0  # no retry for ever
    assert changes[-1][0] is ClientState.CLOSED and changes[-1][1].code == "authentication_refused"
    assert c.statistics().last_reason == "authentication_refused"


async def test_wait_connected_times_out_with_the_last_error(nursery, autojump_clock):
    net, broker = setup(nursery)
    net.refuse = True
    async with PushClient(config(), connector=net, rng=random.Random(1)) as c:
        with pytest.raises(ConnectTimeout) as info:
            await c.wait_connected(timeout=30)
        assert "not connected after 30 s: cannot connect to broker.test:1883" in str(info.value)
        assert isinstance(info.value.last_error, TransportError)
        stats = c.statistics()
        assert stats.consecutive_failures >= 3 and stats.last_reason == "transport"


def test_broker_urls_and_validation():
    assert (BrokerConfig.from_url("mqtts://b:1", client_id="c", topics=["t"]).tls) is True
    c = BrokerConfig.from_url("mqtts://b", client_id="c", topics=["t"])
    assert (c.host, c.port, c.tls) == ("b", 8883, True)
    for url in ("http://b", "mqtt://", "mqtt://b:0x"):
        with pytest.raises(ConfigurationError):
            BrokerConfig.from_url(url, client_id="c", topics=["t"])
    with pytest.raises(ConfigurationError):
        BrokerConfig(host="b", client_id="c", topics=["t"], keepalive=0)
    with pytest.raises(ConfigurationError):
        BrokerConfig(host="b", client_id="", topics=["t"])
    assert BrokerConfig(host="b", client_id="c").topics == ()  # a publisher needs none


def test_a_string_is_not_a_list_of_topics_or_tags():
    with pytest.raises(ConfigurationError, match=r"not a single string 'alerts/#'"):
        BrokerConfig.from_url("mqtt://b", client_id="c", topics="alerts/#")
    with pytest.raises(ConfigurationError, match="not a single string 'beta'"):
        ServerConfig(server_url="http://s", app_key="k", device_id="d", tags="beta")
    c = BrokerConfig(host="b", client_id="c", topics=["a/#", ("b/+", 2), Subscription("c", 0)],
                     qos=1)
    assert c.topics == (Subscription("a/#", 1), Subscription("b/+", 2), Subscription("c", 0))


@pytest.mark.parametrize("bad", ["a/#/b", "a#", "a/b+", "", "x\x00y"])
def test_invalid_topic_filters_are_refused_at_construction(bad):
    with pytest.raises(ConfigurationError, match="topic filter|must not be empty"):
        BrokerConfig(host="b", client_id="c", topics=[bad])


def test_secrets_stay_out_of_repr_and_network_types():
    c = BrokerConfig(host="b", client_id="c", username="u", password="hunter2")
    assert "hunter2" not in repr(c) and "u" in repr(c)
    for kind in ("wifi", "cellular", "ethernet", "other"):
        PushClient(c, device=DeviceStatus(network_type=kind))
    with pytest.raises(ConfigurationError, match="network_type must be one of"):
        DeviceStatus(network_type="satellite")
    with pytest.raises(ConfigurationError, match="needs a username"):
        BrokerConfig(host="b", client_id="c", password="p")
    with pytest.raises(ConfigurationError, match="will: topic name 'a/#'"):
        Will("a/#")
    with pytest.raises(ConfigurationError, match="mqtt_version"):
        BrokerConfig(host="b", client_id="c", mqtt_version="4")
    with pytest.raises(ConfigurationError, match="not implemented by the SDK yet"):
        PushClient(BrokerConfig(host="b", client_id="c", mqtt_version="5"))
