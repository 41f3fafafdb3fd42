"""The pre-flight: every leg a handset and a sender will use, tried once before the run.

It fails within ``--connect-timeout`` with one line naming the leg that did not work:

- server mode: the HTTP API (reachable, TLS verifies, the admin token or app credentials are
  accepted), then one device — registered over HTTP with the run's client-id prefix —
  connecting to the MQTT endpoint the server names (TCP, TLS, token, SUBSCRIBE to its
  inbox), exactly as every handset will; the device is removed again afterwards;
- broker mode: the publisher's connection (TCP, TLS, credentials: CONNACK 0) and a
  SUBSCRIBE to a topic of the run at the run's QoS (a broker ACL refusing it is caught here).
"""
from __future__ import annotations

from typing import cast

import trio

from pushsdk import ClientState, PushClient, ServerConfig
from pushsdk.config import MqttTransport, ServerMqttVersion
from pushsdk.protocol import Disconnect
from pushsdk.transport import TcpConnector, TransportError

from .plan import BrokerTarget, FleetPlan, ServerTarget
from .publisher import PushFailed, check_subscribe, mqtt_session
from .traffic import MeteredConnector, SubackScanner, WebSocketSubackScanner
from .senders import HttpClient, HttpError, check_app, create_app, delete_device

__all__ = ["PreflightError", "preflight", "prepare_server"]


class PreflightError(Exception):
    """A leg of the pre-flight failed; the message is one line for the user."""


def _preflight_id(plan: FleetPlan) -> str:
    """The pre-flight's device (client) id: the run's prefix, ``preflight`` and the shard,
    never the id of a handset (theirs are the prefix and a number, :meth:`FleetPlan.device_id`).
    Per shard: shards of one run started at once (one run id, several machines) would
    otherwise take the same client id over from each other at the broker."""
    return f"{plan.client_id_prefix}preflight-{plan.shard.index}"


def prepare_server(url: str, *, admin_token: str | None, app_key: str | None,
                   master_secret: str | None, ca_file: str | None, timeout: float,
                   app_name: str) -> ServerTarget:
    """The HTTP leg: create an app with the admin token, or check the given one."""
    async def main() -> ServerTarget:
        client = HttpClient(TcpConnector(ca_file=ca_file, connect_timeout=timeout), url,
                            timeout=timeout)
        try:
            if admin_token is not None:
                key, secret = await create_app(client, admin_token, app_name)
                return ServerTarget(url=url, app_key=key, master_secret=secret)
            assert app_key is not None and master_secret is not None
            await check_app(client, app_key, master_secret)
            return ServerTarget(url=url, app_key=app_key, master_secret=master_secret)
        finally:
            await client.aclose()
    try:
        return trio.run(main)
    except HttpError as exc:
        raise PreflightError(f"cannot reach the server at {url}: {exc}") from None
    except PushFailed as exc:
        raise PreflightError(f"server at {url}: {exc}") from None


def preflight(plan: FleetPlan) -> None:
    """Try the MQTT leg(s) of ``plan``'s target; :class:`PreflightError` if one fails."""
    if isinstance(plan.target, ServerTarget):
        trio.run(_server_device, plan)
    else:
        trio.run(_broker, plan)


async def _server_device(plan: FleetPlan) -> None:
    target = plan.target
    assert isinstance(target, ServerTarget)
    failure: list[str] = []
    done = trio.Event()

    def on_state(old: ClientState, new: ClientState, reason: str) -> None:
        # A failed attempt: retried (WAITING) or refused for good (CLOSED before the inbox's
        # SUBACK: a permanent error such as an untrusted certificate).
        if new in (ClientState.WAITING, ClientState.CLOSED) and not failure \
                and not done.is_set():
            failure.append(reason)
            done.set()

    connector = TcpConnector(ca_file=plan.ca_file, connect_timeout=plan.connect_timeout)
    subscribed = _Subscribed(done)
    config = ServerConfig(
        server_url=target.url, app_key=target.app_key, device_id=_preflight_id(plan),
        mqtt_version=cast(ServerMqttVersion, plan.workload.mqtt_version),
        mqtt_transport=cast(MqttTransport, plan.workload.mqtt_transport))
    websocket = plan.workload.mqtt_transport == "ws"
    client = PushClient(config,
                        connector=MeteredConnector(connector, subscribed, mqtt=True,
                                                   websocket=websocket),
                        http_connector=connector, connect_timeout=plan.connect_timeout,
                        on_state_change=on_state)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run)
        with trio.move_on_after(2 * plan.connect_timeout) as scope:
            await done.wait()  # its inbox SUBACK, or a failed attempt
        await client.aclose()
    registration = client.registration
    if registration is not None and plan.workload.cleanup:
        http = HttpClient(connector, target.url, timeout=plan.connect_timeout)
        try:
            await delete_device(http, target, registration.registration_id)
        except (HttpError, PushFailed):
            pass  # the run goes on; a device left over is harmless
        finally:
            await http.aclose()
    where = (f"mqtt{'s' if registration.mqtt_tls else ''}://{registration.mqtt_host}:"
             f"{registration.mqtt_port}" if registration is not None else target.url)
    if registration is not None and websocket:
        where = registration.mqtt_ws or f"{target.url}'s MQTT WebSocket (none advertised)"
    if failure:
        leg = "registering a device" if registration is None else f"connecting to {where}"
        raise PreflightError(f"pre-flight: {leg} failed: {failure[0]}")
    if scope.cancelled_caught:
        raise PreflightError(f"pre-flight: a device did not connect to {where} within "
                             f"{2 * plan.connect_timeout:g} s")


class _Subscribed:
    """Traffic meter of the pre-flight device: only the first SUBACK matters."""

    def __init__(self, done: trio.Event) -> None:
        self._done = done
        self._scanner: SubackScanner | WebSocketSubackScanner | None = None

    def up(self, nbytes: int) -> None:
        pass

    def down(self, nbytes: int) -> None:
        pass

    def on_sent(self, nbytes: int) -> None:
        pass

    def on_received(self, data: bytes) -> None:
        if self._scanner is not None and self._scanner.feed(data):
            self._scanner = None
            self._done.set()

    def on_tcp(self, seconds: float, stream: object,
               scanner: SubackScanner | WebSocketSubackScanner | None) -> None:
        self._scanner = scanner

    def watching_suback(self) -> bool:
        return True


async def _broker(plan: FleetPlan) -> None:
    target = plan.target
    assert isinstance(target, BrokerTarget)
    connector = TcpConnector(ca_file=plan.ca_file, connect_timeout=plan.connect_timeout)
    try:
        link, _ = await mqtt_session(connector, target, _preflight_id(plan),
                                     clean=True, timeout=plan.connect_timeout,
                                     version=plan.mqtt_level)
    except (TransportError, OSError) as exc:
        raise PreflightError(f"cannot reach the broker at {target.url}: {exc}") from None
    topic = plan.topic_filter(0)  # a shared group's filter: $share/NAME/...
    try:
        granted = await check_subscribe(link, topic, plan.workload.qos, plan.connect_timeout)
        try:
            await link.send(Disconnect())
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
    except (TransportError, OSError) as exc:
        raise PreflightError(f"broker at {target.url}: {exc}") from None
    finally:
        await link.close()
    if granted is None:
        raise PreflightError(f"broker at {target.url} refused SUBSCRIBE to {topic!r} "
                             f"(QoS {plan.workload.qos}): check its ACL for the run's topics")
