"""Throughput of the sans-IO MQTT codec: packets/s for encode + decode.

    python -m power_bench.codec_speed [--seconds S]

Each case sends an event on one Connection and parses it on the peer, one packet at a time
(the simulator's pattern), and also parses a batch of 100 packets arriving in one chunk.
"""
from __future__ import annotations

import argparse
import time

from pushsdk.protocol import (
    NEED_DATA,
    ConnAck,
    Connect,
    Connection,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    Role,
)


def _connected_pair() -> tuple[Connection, Connection]:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    server.receive_data(client.send(Connect(client_id="bench")))
    server.next_event()
    client.receive_data(server.send(ConnAck()))
    client.next_event()
    return client, server


def _rate(run, seconds: float) -> float:
    """Packets per second of ``run(n)``, growing n until a run lasts ``seconds``."""
    n = 1000
    while True:
        start = time.perf_counter()
        run(n)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed
        n = int(n * min(10.0, max(2.0, 1.2 * seconds / max(elapsed, 1e-6))))


def _one_by_one(sender: Connection, receiver: Connection, event: object):
    def run(n: int) -> None:
        send, receive_data, next_event = sender.send, receiver.receive_data, receiver.next_event
        for _ in range(n):
            receive_data(send(event))
            if next_event() is NEED_DATA:
                raise AssertionError("packet did not parse")

    return run


def _batched(sender: Connection, receiver: Connection, event: object, batch: int = 100):
    def run(n: int) -> None:
        send, receive_data, next_event = sender.send, receiver.receive_data, receiver.next_event
        for _ in range(n // batch):
            receive_data(b"".join([send(event) for _ in range(batch)]))
            while next_event() is not NEED_DATA:
                pass

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per case")
    args = parser.parse_args(argv)

    client, server = _connected_pair()
    publish = Publish(
        topic="push/app-key-0123/reg-0123456789", payload=b"x" * 200, qos=1, packet_id=42
    )
    cases = [
        ("PINGREQ   client->server", _one_by_one(client, server, PingReq())),
        ("PINGRESP  server->client", _one_by_one(server, client, PingResp())),
        ("PUBLISH   QoS1 200 B s->c", _one_by_one(server, client, publish)),
        ("PUBACK    client->server", _one_by_one(client, server, PubAck(42))),
        ("PINGREQ   x100 per chunk", _batched(client, server, PingReq())),
        ("PUBLISH   x100 per chunk", _batched(server, client, publish)),
    ]
    print(f"{'case (encode + decode)':28} {'packets/s':>12}")
    for name, run in cases:
        print(f"{name:28} {_rate(run, args.seconds):>12,.0f}", flush=True)


if __name__ == "__main__":
    main()
