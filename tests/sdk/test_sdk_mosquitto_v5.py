"""MQTT 5.0 interop against parts nobody here wrote: a real Mosquitto broker and Mosquitto's
own command-line clients (`mosquitto_sub -V mqttv5 -F ...`, `mosquitto_pub -V mqttv5 -D
...`), over loopback. Marker `mosquitto`."""
import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from pushsdk import (
    BrokerConfig,
    Properties,
    PushClient,
    Subscription,
)
from sdk_harness import mosquitto

pytestmark = pytest.mark.mosquitto
SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"


@pytest.fixture
def broker(tmp_path):
    with mosquitto(tmp_path) as port:
        yield port


def cfg(port, client_id, **kwargs):
    return BrokerConfig.from_url(f"mqtt://127.0.0.1:{port}", client_id=client_id,
                                 mqtt_version="5", **kwargs)


async def _start_sub(port: int, topic: str, fmt: str) -> trio.Process:
    assert Path(SUB).exists(), "mosquitto_sub is not installed: run .ci/install-deps"
    # stdbuf: its lines come as they are printed, not when a pipe buffer fills.
    return await trio.lowlevel.open_process(
        ["stdbuf", "-oL", SUB, "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv5", "-t", topic,
         "-q", "1", "-C", "1", "-W", "20", "-d", "-F", fmt],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


async def _lines_until(proc: trio.Process, marker: str) -> list[str]:
    """Read the process's output until a line contains ``marker`` (or it exits)."""
    buffer = b""
    with trio.fail_after(20):
        while marker.encode() not in buffer:
            chunk = await proc.stdout.receive_some(4096)
            if not chunk:
                break
            buffer += chunk
    return buffer.decode("utf-8", "replace").splitlines()


async def test_mosquitto_sub_sees_the_sdks_message_properties(broker):
    proc = await _start_sub(broker, "v5/out", "MSG|%t|%p|%E|%P|%C|%R|%F|%q")
    try:
        await _lines_until(proc, "Subscribed")  # its SUBACK came: it is listening
        async with PushClient(cfg(broker, "sdk-pub", clean_session=True)) as client:
            await client.wait_connected(timeout=10)
            await client.publish("v5/out", b"hello v5", qos=1, properties=Properties(
                message_expiry_interval=120, content_type="text/plain",
                response_topic="v5/reply", payload_format_indicator=1,
                user_properties=(("origin", "pushsdk"), ("origin", "twice"))))
        lines = await _lines_until(proc, "MSG|")
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    line = next(line for line in lines if line.startswith("MSG|"))
    _, topic, payload, expiry, users, ctype, response, pfi, qos = line.split("|")
    assert (topic, payload, ctype, response, pfi, qos) == (
        "v5/out", "hello v5", "text/plain", "v5/reply", "1", "1")
    # Mosquitto forwards the expiry counting down; it cannot have grown or lost much.
    assert 118 <= int(expiry) <= 120
    assert users.split() == ["origin:pushsdk", "origin:twice"]


async def test_the_sdk_receives_mosquitto_pubs_properties(broker):
    async with PushClient(cfg(broker, "sdk-sub", topics=["v5/in/#"], clean_session=True)) \
            as client, client.messages() as messages:
        await client.wait_connected(timeout=10)
        await trio.run_process(
            [PUB, "-h", "127.0.0.1", "-p", str(broker), "-V", "mqttv5", "-q", "1",
             "-t", "v5/in/a", "-m", "from mosquitto_pub",
             "-D", "publish", "user-property", "k", "v",
             "-D", "publish", "user-property", "k", "w",
             "-D", "publish", "message-expiry-interval", "300",
             "-D", "publish", "content-type", "application/json",
             "-D", "publish", "correlation-data", "abc123",
             "-D", "publish", "response-topic", "v5/back"])
        with trio.fail_after(10):
            async for message in messages:  # noqa: B007  (the first message)
                break
    assert (message.topic, message.text, message.qos) == ("v5/in/a", "from mosquitto_pub", 1)
    props = message.properties
    assert props.user_properties == (("k", "v"), ("k", "w"))
    assert 298 <= props.message_expiry_interval <= 300
    assert props.content_type == "application/json"
    assert props.correlation_data == b"abc123" and props.response_topic == "v5/back"


async def test_sdk_to_sdk_through_mosquitto_5(broker):
    """Subscription options and a persistent 5.0 session through the real broker."""
    sub_cfg = cfg(broker, "sdk-5-sub", topics=[Subscription("room/#", 2, no_local=True)],
                  session_expiry=300)
    async with PushClient(sub_cfg) as sub, sub.messages() as messages:
        await sub.wait_connected(timeout=10)
        # no_local: its own message is not sent back to it.
        await sub.publish("room/self", b"mine", qos=1)
        async with PushClient(cfg(broker, "sdk-5-pub", clean_session=True)) as pub:
            await pub.wait_connected(timeout=10)
            await pub.publish("room/1", b"theirs", qos=2, properties=Properties(
                user_properties=(("n", "1"),)))
        with trio.fail_after(10):
            async for message in messages:  # noqa: B007  (the first message)
                break
    assert (message.topic, message.payload, message.qos) == ("room/1", b"theirs", 2)
    assert message.properties.user_properties == (("n", "1"),)


async def test_a_shared_subscription_through_mosquitto(broker):
    async with PushClient(cfg(broker, "sdk-share", clean_session=True)) as client, \
            client.messages() as messages:
        await client.wait_connected(timeout=10)
        assert await client.subscribe("$share/group/jobs/+") == (1,)
        await client.publish("jobs/7", b"work", qos=1)
        with trio.fail_after(10):
            async for message in messages:  # noqa: B007  (the first message)
                break
    assert (message.topic, message.payload) == ("jobs/7", b"work")
