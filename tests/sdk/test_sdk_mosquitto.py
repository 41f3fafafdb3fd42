"""Broker mode against a real Mosquitto (marker `mosquitto`; skipped without the binary)."""
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import trio

from pushsdk import BrokerConfig, FixedStrategy, MemoryStateStore, PushClient

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
pytestmark = pytest.mark.mosquitto
import paho.mqtt.publish as paho_publish  # noqa: E402  (a test dependency)


@pytest.fixture
def broker_port(tmp_path):
    assert MOSQUITTO is not None, "mosquitto is not installed: run .ci/install-deps"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("mosquitto did not start")
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def publish(port, topic, payload, qos=1):
    paho_publish.single(topic, payload, qos=qos, hostname="127.0.0.1", port=port)


async def test_broker_mode_with_mosquitto(broker_port):
    got = []
    config = BrokerConfig(host="127.0.0.1", port=broker_port, client_id="sdk-test",
                          topics=["sensors/#"], keepalive=5)
    store = MemoryStateStore()
    with trio.fail_after(20):
        async with PushClient(config, state_store=store, on_message=got.append,
                              strategy=FixedStrategy(0.5)) as client:
            await client.wait_connected()
            await trio.sleep(0.2)  # let the SUBACK arrive
            await trio.to_thread.run_sync(publish, broker_port, "sensors/1", b"21.5")
            while not got:
                await trio.sleep(0.02)
            await trio.sleep(1.2)  # a couple of heartbeats answered by the broker
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
