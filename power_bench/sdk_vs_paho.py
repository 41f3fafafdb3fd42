"""The SDK beside paho-mqtt against one Mosquitto: idle memory per connection and connect
rate (a benchmark printing figures, not a test).

::

    flock /tmp/pushsim-bench.lock python -m power_bench.sdk_vs_paho [--n 5000] [--rate 0]
                                                   [--mqtt-version 3.1.1|5] [--json FILE]

One Mosquitto on a free loopback port serves both sides, one after the other, each in a fresh
process of its own: N clients connect (client id, persistent session, keepalive 600 s),
subscribe QoS 1 to their own topic and sit idle. The RSS growth of the process divided by N is
the memory per idle connection (after a GC); N divided by the time from the first connect to the
last CONNACK is the connect rate (``--rate 0``: as fast as each side goes; otherwise paced). On
MQTT 5 both sides ask for a session that never expires (Session Expiry Interval 0xFFFFFFFF), the
5.0 counterpart of the persistent 3.1.1 session. The SDK runs N ``PushClient``s in one
``trio.run`` (``nursery.start_soon(client.run)``, as a fleet does); paho runs N
``paho.mqtt.client.Client``s driven by one selector loop in one thread
(``loop_read``/``loop_write``/``loop_misc``: a thread per client is not viable at this scale).
The load average before and after is printed with the figures: record them only when it was low.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from power_bench.children import Mosquitto, own_rss, raise_nofile, source_ips

KEEPALIVE = 600



# --- the two sides, each in its own process ---------------------------------------------------

def sdk_side(n: int, port: int, rate: float, version: str = "3.1.1",
             at_idle: Callable[[], None] | None = None, timeout: float = 120.0,
             first_ip: int = 2) -> dict[str, Any]:
    """N SDK clients in one ``trio.run``: counts, seconds to the last CONNACK (waiting at
    most ``timeout``), RSS. ``at_idle()`` is called once every client is connected and idle
    (for a profiler)."""
    import trio

    from pushsdk import BrokerConfig, ClientState, PushClient, Subscription, TcpConnector
    from pushsdk.config import MqttVersion

    # The child's argv carries a str; BrokerConfig's validator refuses any but its literals.
    mqtt_version = cast(MqttVersion, version)

    raise_nofile()

    async def main() -> dict[str, Any]:
        connected = 0
        all_in = trio.Event()

        def on_state(old: ClientState, new: ClientState, reason: str) -> None:
            nonlocal connected
            if new is ClientState.CONNECTED:
                connected += 1
                if connected == n:
                    all_in.set()
            elif old is ClientState.CONNECTED:  # counted while connected, not per connect
                connected -= 1

        connectors = [TcpConnector(source_ip=ip) for ip in source_ips(n, first_ip)]
        rng = random.Random(1)  # shared, as pushsim fleet does (a Random is 2.5 KB)
        before = own_rss()
        clients = [PushClient(BrokerConfig(host="127.0.0.1", port=port, client_id=f"sdk-{i}",
                                           topics=(Subscription(f"sdk/{i}", 1),),
                                           keepalive=KEEPALIVE, mqtt_version=mqtt_version),
                              connector=connectors[i % len(connectors)], rng=rng,
                              on_message=lambda m: None, on_state_change=on_state)
                   for i in range(n)]
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            for i, client in enumerate(clients):
                if rate and i % max(1, int(rate / 1000)) == 0:
                    await trio.sleep_until(start + i / rate)
                nursery.start_soon(client.run)
            with trio.move_on_after(timeout):
                await all_in.wait()
            seconds = trio.current_time() - start
            got = connected
            await trio.sleep(2.0)  # SUBACKs in, everything idle
            after = own_rss()
            if at_idle is not None:
                at_idle()
            attempts = sum(c.statistics().connect_attempts for c in clients)
            nursery.cancel_scope.cancel()
        return {"connected": got, "seconds": seconds, "rss_before": before,
                "rss_after": after, "connect_attempts": attempts}

    return trio.run(main)


def paho_side(n: int, port: int, rate: float, version: str = "3.1.1",
              timeout: float = 120.0, first_ip: int = 2) -> dict[str, Any]:
    """N paho clients on one selector loop: counts, seconds to the last CONNACK (waiting at
    most ``timeout``), RSS."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    raise_nofile()
    ips = source_ips(n, first_ip)
    selector = selectors.DefaultSelector()
    state = {"connected": 0}
    dirty: set[Any] = set()

    def on_connect(client: Any, userdata: Any, flags: Any, reason_code: Any,
                   properties: Any) -> None:
        if not reason_code.is_failure:
            state["connected"] += 1
            client.subscribe(userdata, qos=1)
            dirty.add(client)

    def pump(wait: float) -> None:
        for key, _ in selector.select(wait):
            key.data.loop_read()
        for client in list(dirty):
            if client.want_write():
                client.loop_write()
            else:
                dirty.discard(client)

    v5 = version == "5"
    expiry = None
    if v5:
        expiry = Properties(PacketTypes.CONNECT)
        expiry.SessionExpiryInterval = 0xFFFFFFFF
    before = own_rss()
    clients = []
    start = time.monotonic()
    for i in range(n):
        client = _connect_paho(i, port, ips[i % len(ips)], expiry)
        client.on_connect = on_connect
        sock = client.socket()
        assert sock is not None, "paho has the socket once connect() returned"
        selector.register(sock, selectors.EVENT_READ, client)
        dirty.add(client)
        clients.append(client)
        if rate:
            while time.monotonic() < start + (i + 1) / rate:
                pump(max(0.0, min(0.01, start + (i + 1) / rate - time.monotonic())))
        else:
            pump(0)
    deadline = start + timeout
    while state["connected"] < n and time.monotonic() < deadline:
        pump(0.05)
    seconds = time.monotonic() - start
    got = state["connected"]
    settle = time.monotonic() + 2.0
    while time.monotonic() < settle:
        pump(0.05)
    for client in clients:
        client.loop_misc()
    after = own_rss()
    return {"connected": got, "seconds": seconds, "rss_before": before, "rss_after": after,
            "connect_attempts": n}  # paho's connect() blocks until TCP is up: one each


def _connect_paho(i: int, port: int, ip: str, expiry: Any) -> Any:
    """paho client ``paho-<i>`` from ``ip``, TCP up and CONNECT sent (persistent session;
    on MQTT 5 when ``expiry``, the CONNECT properties, is given). ``on_connect`` is set
    afterwards: paho calls it only from a read."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    v5 = expiry is not None
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"paho-{i}",
                         clean_session=None if v5 else False,
                         protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, userdata=f"paho/{i}")
    if v5:
        client.connect("127.0.0.1", port, keepalive=KEEPALIVE, bind_address=ip,
                       clean_start=False, properties=expiry)
    else:
        client.connect("127.0.0.1", port, keepalive=KEEPALIVE, bind_address=ip)
    return client


# --- the run -----------------------------------------------------------------------------------

#: Each side of each run connects from loopback addresses of its own (blocks of 10 from
#: 127.0.0.2 on, in turn): the ports of the run before are still in TIME_WAIT for a minute,
#: and three runs of 10,000 connections from one address exhaust its ephemeral ports (paho's
#: bind then fails with EADDRINUSE).
_ADDRESS_BLOCKS = itertools.cycle(range(2, 252, 10))


def measure_side(kind: str, n: int, port: int, rate: float,
                 version: str = "3.1.1") -> dict[str, Any]:
    """One side (``"sdk"`` or ``"paho"``) in a fresh process; its figures."""
    done = subprocess.run([sys.executable, "-m", "power_bench.sdk_vs_paho", f"_{kind}",
                           str(n), str(port), str(rate), version, str(next(_ADDRESS_BLOCKS))],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} side failed: {done.stderr.strip()[-500:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    got = max(1, figures["connected"])
    figures["bytes_per_connection"] = (figures["rss_after"] - figures["rss_before"]) / got
    figures["connect_rate_per_s"] = figures["connected"] / figures["seconds"]
    return figures


def run(n: int, rate: float, version: str = "3.1.1") -> dict[str, Any]:
    """Both sides against one fresh Mosquitto, one after the other."""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="sdk-vs-paho-") as tmp:
        broker = Mosquitto(Path(tmp))
        try:
            sdk = measure_side("sdk", n, broker.port, rate, version)
            paho = measure_side("paho", n, broker.port, rate, version)
        finally:
            broker.stop()
    return {"n": n, "rate": rate, "mqtt_version": version, "load_before": load_before,
            "load_after": os.getloadavg(), "sdk": sdk, "paho": paho}


def report(result: dict[str, Any]) -> str:
    pace = "unpaced" if not result["rate"] else f"paced at {result['rate']:g}/s"
    lines = [f"{result['n']} idle connections each, one Mosquitto, MQTT "
             f"{result['mqtt_version']}, {pace}",
             "side   connected  attempts  KB/connection  connects/s",
             "-----  ---------  --------  -------------  ----------"]
    for side in ("sdk", "paho"):
        f = result[side]
        lines.append(f"{side:5}  {f['connected']:9d}  {f['connect_attempts']:8d}"
                     f"  {f['bytes_per_connection'] / 1000:13.1f}"
                     f"  {f['connect_rate_per_s']:10.0f}")
    lines.append("load average before %.2f %.2f %.2f, after %.2f %.2f %.2f"
                 % (*result["load_before"], *result["load_after"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("_sdk", "_paho"):
        n, port, rate, version = int(argv[1]), int(argv[2]), float(argv[3]), argv[4]
        first_ip = int(argv[5]) if len(argv) > 5 else 2
        side = sdk_side if argv[0] == "_sdk" else paho_side
        print(json.dumps(side(n, port, rate, version, first_ip=first_ip)))
        return 0
    parser = argparse.ArgumentParser(prog="python -m power_bench.sdk_vs_paho",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="connections per side")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="connects per second (0: as fast as each side goes)")
    parser.add_argument("--mqtt-version", choices=("3.1.1", "5"), default="3.1.1")
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = parser.parse_args(argv)
    result = run(args.n, args.rate, args.mqtt_version)
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
