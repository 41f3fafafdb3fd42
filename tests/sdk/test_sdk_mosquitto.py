"""Broker mode against a real Mosquitto (marker `mosquitto`; the ``mosquitto`` fixture fails the
test when the binary is missing)."""
import paho.mqtt.publish as paho_publish
import pytest
import trio

from pushsdk import BrokerConfig, FixedStrategy, MemoryStateStore, PushClient

pytestmark = pytest.mark.mosquitto


def publish(port, topic, payload, qos=1):
    paho_publish.single(topic, payload, qos=qos, hostname="127.0.0.1", port=port)


async def test_broker_mode_with_mosquitto(mosquitto):
    broker_port = mosquitto.port
    got = []
    config = BrokerConfig(host="127.0.0.1", port=broker_port, client_id="sdk-test",
                          topics=["sensors/#"], keepalive=5)
    store = MemoryStateStore()
    with trio.fail_after(20):
        async with PushClient(config, state_store=store, on_message=got.append,
                              strategy=FixedStrategy(0.5)) as client:
            await client.wait_connected()
            while not mosquitto.log_count("Sending SUBACK to sdk-test"):
                await trio.sleep(0.02)
            await trio.to_thread.run_sync(publish, broker_port, "sensors/1", b"21.5")
            while not got:
                await trio.sleep(0.02)
            while client.statistics().heartbeats_succeeded < 2:  # answered by the broker
                await trio.sleep(0.02)
            stats = client.statistics()
        assert got[0].topic == "sensors/1" and got[0].payload == b"21.5" and got[0].qos == 1
        assert stats.heartbeats_succeeded >= 2 and stats.heartbeats_failed == 0
        assert stats.connects == 1

        # clean_session=False: a QoS 1 message published while the client is away is kept by
        # the broker and delivered when the same client id comes back.
        await trio.to_thread.run_sync(publish, broker_port, "sensors/2", b"while away")
        async with PushClient(config, state_store=store, on_message=got.append) as client:
            await client.wait_connected()
            while len(got) < 2:
                await trio.sleep(0.02)
    assert got[1].topic == "sensors/2" and got[1].payload == b"while away"
