import json
from functools import partial

import pytest
import trio
import trio.testing

from pushsdk.registration import (
    Registration,
    RegistrationError,
    RegistrationRefused,
    parse_server_url,
    register,
)
from pushsdk.transport import TcpConnector, TransportError
from sdk_harness import APP_KEY, EPOCH, MemoryNetwork, Registrar

URL = "http://push.test:8480"


def network_with(nursery, handler, host="push.test", port=8480):
    net = MemoryNetwork(nursery)
    net.serve(host, port, handler)
    return net


@pytest.mark.parametrize("chunked", [False, True])
async def test_register_over_memory_stream(nursery, autojump_clock, chunked):
    registrar = Registrar(chunked=chunked)
    net = network_with(nursery, registrar.handle)
    traffic = []
    reg = await register(net, URL, APP_KEY, "dev-1", platform="ios", alias="alice",
                         tags=["a", "b"], on_traffic=lambda up, down: traffic.append((up, down)))
    assert reg == Registration(
        server_url=URL, app_key=APP_KEY, device_id="dev-1", registration_id="reg-dev-1",
        token="tok-1", token_expires_at=EPOCH + 30 * 86400, inbox=f"push/{APP_KEY}/reg-dev-1",
        mqtt_host="mqtt.test", mqtt_port=1883, mqtt_tls=False,
        alias="alice", tags=("a", "b"), profile_known=True,
    )
    assert "tok-1" not in repr(reg)  # the token is a secret
    request, body = registrar.requests[0]
    assert body == {"device_id": "dev-1", "platform": "ios", "alias": "alice", "tags": ["a", "b"]}
    headers = dict(request.headers)
    assert headers[b"x-app-key"] == APP_KEY.encode()
    assert headers[b"host"] == b"push.test:8480"
    assert headers[b"content-type"] == b"application/json"
    assert sum(up for up, _ in traffic) > 100 and sum(down for _, down in traffic) > 100
    assert reg.answer()["mqtt"] == {"host": "mqtt.test", "port": 1883, "tls": False}
    assert reg.receipt_topic == f"rcpt/{APP_KEY}/reg-dev-1"


async def test_optional_fields_are_left_out(nursery):
    registrar = Registrar()
    await register(network_with(nursery, registrar.handle), URL, APP_KEY, "d")
    assert registrar.requests[0][1] == {"device_id": "d", "platform": "android"}


async def test_base_path_and_default_port(nursery):
    seen = []

    async def handler(stream):
        data = await stream.receive_some()
        seen.append(data)
        body = b'{"error": {"code": "nope", "message": "x"}}'
        await stream.send_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s"
                              % (len(body), body))

    net = network_with(nursery, handler, port=80)
    with pytest.raises(RegistrationError):
        await register(net, "http://push.test/api/", APP_KEY, "d")
    assert seen[0].startswith(b"POST /api/v1/devices HTTP/1.1\r\n")
    assert b"\r\nhost: push.test\r\n" in seen[0].lower()


async def test_error_answer_is_parsed(nursery):
    registrar = Registrar(app_key="other")
    with pytest.raises(RegistrationError) as info:
        await register(network_with(nursery, registrar.handle), URL, APP_KEY, "d")
    err = info.value
    assert isinstance(err, RegistrationRefused) and err.permanent
    assert (err.status, err.code) == (401, "bad_app_key")
    assert err.message == "unknown app key (check the app key)"
    assert not err.retryable
    assert str(err) == ("registration failed: HTTP 401 bad_app_key: unknown app key "
                        "(check the app key)")


@pytest.mark.parametrize("status, body, code, retryable", [
    (502, b"<html>bad gateway</html>", "http_502", True),
    (429, b'{"error": {"code": "rate_limited", "message": "slow down"}}', "rate_limited", True),
    (200, b"not json", "bad_response", False),
    (200, b'{"registration_id": "r"}', "bad_response", False),
    (200, b'{"registration_id": "r", "token": "t", "token_expires_at": "soon", "inbox": "i",'
          b' "mqtt": {"host": "h", "port": 1883}}', "bad_response", False),
    (200, b'{"registration_id": "r", "token": "t", "token_expires_at": 1, "inbox": "i",'
          b' "mqtt": {"host": "h", "port": 70000}}', "bad_response", False),
])
async def test_unusable_answers(nursery, status, body, code, retryable):
    registrar = Registrar(error=(status, body))
    with pytest.raises(RegistrationError) as info:
        await register(network_with(nursery, registrar.handle), URL, APP_KEY, "d")
    assert info.value.status == status
    assert info.value.code == code
    assert info.value.retryable is retryable


async def test_close_delimited_answer(nursery):
    answer = json.dumps({"registration_id": "r", "token": "t", "token_expires_at": 5,
                         "inbox": "i", "mqtt": {"host": "h", "port": 1883, "tls": True}})

    async def http10(stream):
        await stream.receive_some()
        await stream.send_all(b"HTTP/1.0 200 OK\r\n\r\n" + answer.encode())
        await stream.aclose()

    reg = await register(network_with(nursery, http10), URL, APP_KEY, "d")
    assert (reg.token, reg.mqtt_tls, reg.token_expires_at) == ("t", True, 5)


async def test_server_closing_without_answer(nursery):
    async def rude(stream):
        await stream.receive_some()
        await stream.aclose()

    with pytest.raises(RegistrationError) as info:
        await register(network_with(nursery, rude), URL, APP_KEY, "d")
    assert info.value.code == "bad_response" and info.value.retryable


async def test_garbage_answer(nursery):
    async def garbage(stream):
        await stream.receive_some()
        await stream.send_all(b"SSH-2.0-OpenSSH\r\n\r\n")

    with pytest.raises(RegistrationError, match="invalid HTTP response"):
        await register(network_with(nursery, garbage), URL, APP_KEY, "d")


async def test_huge_answer_is_refused(nursery):
    async def huge(stream):
        await stream.receive_some()
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
        await stream.send_all(b"x" * 1_000_000)

    with pytest.raises(RegistrationError, match="too large"):
        await register(network_with(nursery, huge), URL, APP_KEY, "d")


async def test_timeout(nursery, autojump_clock):
    async def silent(stream):
        await trio.sleep_forever()

    with pytest.raises(TransportError, match="timed out after 30 s"):
        await register(network_with(nursery, silent), URL, APP_KEY, "d")
    assert trio.current_time() == 30


async def test_unreachable(nursery):
    with pytest.raises(TransportError, match="refused"):
        await register(MemoryNetwork(nursery), URL, APP_KEY, "d")


@pytest.mark.parametrize("url", ["ftp://x", "push.test:8480", "http://", "http://h:99999"])
def test_bad_urls(url):
    with pytest.raises(ValueError):
        parse_server_url(url)


def test_url_parts():
    assert parse_server_url("https://h") == ("h", 443, True, "")
    assert parse_server_url("http://h:8480/x/") == ("h", 8480, False, "/x")


async def test_register_over_loopback_socket(nursery):
    registrar = Registrar()
    listeners = await nursery.start(partial(trio.serve_tcp, registrar.handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    reg = await register(TcpConnector(), url, APP_KEY, "dev-9")
    assert (reg.registration_id, reg.token, reg.server_url) == ("reg-dev-9", "tok-1", url)


async def test_loopback_refused():
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TransportError, match="cannot connect to 127.0.0.1"):
        await register(TcpConnector(), f"http://127.0.0.1:{port}", APP_KEY, "d")


def test_registration_record_round_trip():
    reg = Registration(server_url=URL, app_key="k", device_id="d", registration_id="r",
                       token="t", token_expires_at=100.0, inbox="i", mqtt_host="h",
                       mqtt_port=1, mqtt_tls=False)
    assert Registration.from_dict(reg.to_dict()) == reg
    assert reg.token_expired(100) and not reg.token_expired(99)
    assert reg.token_expired(50, margin=60)
    assert reg.is_for(URL, "k", "d") and not reg.is_for(URL, "k", "other")
    with pytest.raises(ValueError):
        Registration.from_dict({**reg.to_dict(), "mqtt_port": True})
    with pytest.raises(ValueError):
        Registration.from_dict({"token": "t"})
