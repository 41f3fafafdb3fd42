"""MQTT 5.0 in the SDK, against a scripted 5.0 broker (the codec's server end) in virtual
time: CONNECT properties, CONNACK reason codes and Server Keep Alive, Receive Maximum,
message properties both ways, topic aliases, DISCONNECT from the server, refusals."""
import functools
import random

import pytest
import trio

from pushsdk import (
    AuthenticationRefused,
    BrokerConfig,
    ClientState,
    FixedStrategy,
    IdentifierRejected,
    NotAuthorized,
    Properties,
    PublishRefused,
    PushClient,
    ServerDisconnected,
    ServerUnavailable,
    Subscription,
    SubscriptionRefused,
    VirtualClock,
    Will,
)
from pushsdk.protocol import (
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PubAck,
    Publish,
    ReasonCode,
    SubAck,
    Subscribe,
)
from sdk_harness import EPOCH, MemoryNetwork, ScriptedBroker

HOST, PORT = "broker.test", 1883


def config(**kwargs):
    kwargs.setdefault("topics", ["t/#"])
    return BrokerConfig(host=HOST, port=PORT, client_id="c5", mqtt_version="5", **kwargs)


def setup(nursery, **broker_kwargs):
    net = MemoryNetwork(nursery)
    broker = ScriptedBroker(protocol_version=5, **broker_kwargs)
    net.serve(HOST, PORT, broker.handle)
    return net, broker


def client(net, cfg=None, **kwargs):
    kwargs.setdefault("strategy", FixedStrategy(100))
    kwargs.setdefault("rng", random.Random(1))
    return PushClient(cfg or config(), connector=net, clock=VirtualClock(EPOCH), **kwargs)


async def test_connect_declares_session_expiry_receive_maximum_and_aliases(nursery,
                                                                           autojump_clock):
    net, broker = setup(nursery)
    will = Will("status/c5", b"gone", qos=1, properties=Properties(will_delay_interval=30))
    async with client(net, config(will=will, password="pw", topics=[
            Subscription("t/#", 2, no_local=True, retain_handling=2)])) as c:
        await c.wait_connected()
    connect = broker.events(Connect)[0]
    assert connect.protocol_level == 5 and connect.clean_session is False
    assert connect.properties == Properties(session_expiry_interval=0xFFFFFFFF,
                                            receive_maximum=16, topic_alias_maximum=16)
    assert connect.will.properties.will_delay_interval == 30
    assert connect.username is None and connect.password == b"pw"  # 5.0 allows it
    (topic_filter, options), = broker.events(Subscribe)[0].subscriptions
    assert topic_filter == "t/#"
    assert (options.qos, options.no_local, options.retain_handling) == (2, True, 2)


async def test_clean_session_asks_no_session_and_session_expiry_is_configurable(
        nursery, autojump_clock):
    net, broker = setup(nursery)
    async with client(net, config(clean_session=True)) as c:
        await c.wait_connected()
    async with client(net, config(session_expiry=600)) as c:
        await c.wait_connected()
    first, second = broker.events(Connect)
    assert first.clean_session and first.properties.session_expiry_interval is None
    assert second.properties.session_expiry_interval == 600


async def test_server_keep_alive_replaces_the_declared_keepalive(nursery, autojump_clock):
    seen = []

    class Recording(FixedStrategy):
        def interval(self, state, ctx):
            seen.append(ctx.server_keepalive)
            return super().interval(state, ctx)

    net, broker = setup(nursery, connack=lambda c, i: ConnAck(
        0, properties=Properties(server_keep_alive=40)))
    async with client(net, strategy=Recording(100)) as c:
        await c.wait_connected()
        t0 = trio.current_time()
        await trio.sleep(130)
        assert c.keepalive == 100  # what the CONNECT declared
    # The server's 40 s is the ceiling: a ping after 40 s of sending nothing, not 100 s.
    assert broker.times(PingReq) == [t0 + 40, t0 + 80, t0 + 120]
    assert broker.events(Connect)[0].keepalive == 100
    assert seen and set(seen) == {40}


async def test_receive_maximum_bounds_messages_in_flight(nursery, autojump_clock):
    held: list[Publish] = []
    net, broker = setup(nursery, connack=lambda c, i: ConnAck(
        0, properties=Properties(receive_maximum=2)), ack_publishes=lambda i: False)
    async with client(net) as c:
        await c.wait_connected()
        async with trio.open_nursery() as senders:
            for n in range(5):
                senders.start_soon(functools.partial(c.publish, f"t/{n}", b"x", qos=1))
                await trio.sleep(0)  # queued in this order
            await broker.wait_for(lambda: len(broker.events(Publish)) >= 2)
            await trio.sleep(5)
            held = broker.events(Publish)
            assert len(held) == 2  # the broker's Receive Maximum, not our max_inflight (20)
            for publish in held:
                await broker.current.send(PubAck(publish.packet_id))
            await broker.wait_for(lambda: len(broker.events(Publish)) >= 4)
            await trio.sleep(5)
            assert len(broker.events(Publish)) == 4
            for publish in broker.events(Publish)[2:]:
                await broker.current.send(PubAck(publish.packet_id))
            await broker.wait_for(lambda: len(broker.events(Publish)) == 5)
            await broker.current.send(PubAck(broker.events(Publish)[4].packet_id))
    assert [p.topic for p in broker.events(Publish)] == [f"t/{n}" for n in range(5)]


async def test_message_properties_both_ways_and_topic_aliases(nursery, autojump_clock):
    net, broker = setup(nursery)
    props = Properties(message_expiry_interval=60, content_type="text/plain",
                       response_topic="reply/c5", correlation_data=b"\x01\x02",
                       payload_format_indicator=1,
                       user_properties=(("k", "v"), ("k", "w")))
    async with client(net) as c, c.messages() as messages:
        await c.wait_connected()
        await c.publish("t/out", "hello", qos=1, properties=props)
        sent = broker.events(Publish)[0]
        assert sent.properties == props
        # The broker sets alias 3 for t/in, then uses it with an empty topic.
        await broker.current.send(Publish("t/in", b"one", qos=1, packet_id=1,
                                          properties=Properties(topic_alias=3,
                                                                user_properties=(("a", "1"),))))
        await broker.current.send(Publish("", b"two", qos=1, packet_id=2,
                                          properties=Properties(topic_alias=3,
                                                                message_expiry_interval=9)))
        got = []
        async for message in messages:
            got.append(message)
            if len(got) == 2:
                break
    assert [(m.topic, m.payload) for m in got] == [("t/in", b"one"), ("t/in", b"two")]
    assert got[0].properties.user_properties == (("a", "1"),)
    assert got[1].properties.message_expiry_interval == 9


async def test_properties_are_refused_on_311(nursery, autojump_clock):
    net = MemoryNetwork(nursery)
    broker = ScriptedBroker()
    net.serve(HOST, PORT, broker.handle)
    async with PushClient(BrokerConfig(host=HOST, port=PORT, client_id="c3"),
                          connector=net) as c:
        await c.wait_connected()
        with pytest.raises(ValueError, match="message properties need MQTT 5"):
            await c.publish("t/x", b"", properties=Properties(message_expiry_interval=1))
        with pytest.raises(ValueError, match="subscription options need MQTT 5"):
            await c.subscribe(Subscription("a", no_local=True))


@pytest.mark.parametrize(("code", "error", "permanent"), [
    (0x85, IdentifierRejected, True),
    (0x86, AuthenticationRefused, True),
    (0x87, NotAuthorized, True),
    (0x8A, NotAuthorized, True),
    (0x97, ServerUnavailable, False),
    (0x89, ServerUnavailable, False),
])
async def test_connack_reason_codes_map_to_typed_errors(nursery, autojump_clock, code, error,
                                                        permanent):
    net, broker = setup(nursery, connack=lambda c, i: ConnAck(
        code, properties=Properties(reason_string="said the broker")))
    c = client(net)
    nursery.start_soon(c.run)
    with trio.fail_after(30):
        while c.statistics().last_error is None:
            await trio.sleep(0.5)
    failure = c.error if permanent else None
    if permanent:
        await c.aclose()
        assert isinstance(failure, error) and type(failure).permanent
    else:
        stats = c.statistics()
        assert c.state is ClientState.WAITING and stats.last_reason == error.reason_code
        await c.aclose()
    last = c.statistics().last_error
    assert f"CONNACK {code:#04x}" in last and '"said the broker"' in last
    if permanent:
        assert failure.mqtt_reason_code == code and failure.return_code == code


async def test_a_disconnect_from_the_server_is_surfaced_and_retried(nursery, autojump_clock):
    net, broker = setup(nursery)
    reasons = []
    async with client(net, on_state_change=lambda o, n, r: reasons.append(r)) as c:
        await c.wait_connected()
        await trio.sleep(1)  # the SUBSCRIBE answered (nothing may follow a DISCONNECT)
        await broker.current.send(Disconnect(ReasonCode.SESSION_TAKEN_OVER, Properties(
            reason_string="another connection")))
        await broker.wait_for(lambda: len(broker.events(Connect)) == 2)
        await c.wait_connected()
    waiting = next(r for r in reasons if r.code == "server_disconnected")
    assert isinstance(waiting.error, ServerDisconnected)
    assert waiting.error.mqtt_reason_code == 0x8E
    assert "0x8e session taken over" in waiting and '"another connection"' in waiting


async def test_puback_and_suback_failures_are_the_callers_errors(nursery, autojump_clock):
    net, broker = setup(
        nursery, suback_code=0x87,
        puback=lambda p: PubAck(p.packet_id, ReasonCode.QUOTA_EXCEEDED if p.topic == "t/no"
                                else 0))
    async with client(net, config(topics=[])) as c:
        await c.wait_connected()
        with pytest.raises(PublishRefused, match="0x97 quota exceeded") as caught:
            await c.publish("t/no", b"x", qos=1)
        assert caught.value.mqtt_reason_code == 0x97
        await c.publish("t/yes", b"x", qos=1)  # the client goes on
        with pytest.raises(SubscriptionRefused) as refused:
            await c.subscribe("a/#")
        assert refused.value.mqtt_reason_codes == (0x87,) and "0x87" in str(refused.value)
        assert c.statistics().publishes_completed == 1


async def test_a_limit_the_broker_declared_fails_only_that_message(nursery, autojump_clock):
    net, broker = setup(nursery, connack=lambda c, i: ConnAck(
        0, properties=Properties(maximum_qos=1, retain_available=False)))
    async with client(net, config(topics=[])) as c:
        await c.wait_connected()
        with pytest.raises(PublishRefused, match="Maximum QoS"):
            await c.publish("t/x", b"x", qos=2)
        with pytest.raises(PublishRefused, match="Retain Available"):
            await c.publish("t/x", b"x", qos=1, retain=True)
        await c.publish("t/x", b"fine", qos=1)
    assert [p.payload for p in broker.events(Publish)] == [b"fine"]


async def test_suback_granted_codes_come_back(nursery, autojump_clock):
    net, broker = setup(nursery, suback_code=ReasonCode.GRANTED_QOS_1)
    async with client(net, config(topics=[])) as c:
        await c.wait_connected()
        assert await c.subscribe(("a/#", 2)) == (1,)
    assert isinstance(broker.events(SubAck), list)
