"""Throughput of the sans-IO MQTT codec: packets/s for encode + decode, 3.1.1 and 5.0.

    python -m power_bench.codec_speed [--seconds S] [--repeat N] [--baseline DIR]

Each case sends events on one Connection and parses them on the peer, one packet at a time
(the simulator's pattern), or a batch of 100 packets arriving in one chunk. "round" cases
are a server PUBLISH QoS 1 and the client's PUBACK (two packets); "built" rounds also
construct the events each time, as the reference server does per push. The 5.0 push
properties are what the server attaches to a push: Message Expiry Interval and two User
Properties.

Rates are per CPU second of this process (``time.process_time``). ``--baseline DIR``
loads another copy of the ``pushsdk/protocol`` package from DIR (e.g.
an older version checked out in /tmp) and measures its 3.1.1 cases in the same run,
interleaved with this one's; each figure is the best of ``--repeat`` runs. Run it under
``flock /tmp/pushsim-bench.lock`` and note the load average (printed).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pushsdk.protocol as current

Run = Callable[[int], None]
TOPIC = "push/app-key-0123/reg-0123456789"
PAYLOAD = b"x" * 200


def load_codec(directory: str) -> ModuleType:
    """Import the protocol package found in ``directory`` under a name of its own."""
    path = Path(directory)
    spec = importlib.util.spec_from_file_location(
        "baseline_protocol", path / "__init__.py", submodule_search_locations=[str(path)])
    if spec is None or spec.loader is None:
        raise SystemExit(f"codec_speed: no protocol package in {directory}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_protocol"] = module
    spec.loader.exec_module(module)
    return module


def _connected_pair(codec: ModuleType, version: int) -> tuple[Any, Any]:
    role = codec.Role
    if version == 5:
        client = codec.Connection(role.CLIENT, protocol_version=5)
        server = codec.Connection(role.SERVER, protocol_version=None)
        connect = codec.Connect(client_id="bench", protocol_level=5)
    else:
        client, server = codec.Connection(role.CLIENT), codec.Connection(role.SERVER)
        connect = codec.Connect(client_id="bench")
    server.receive_data(client.send(connect))
    server.next_event()
    client.receive_data(server.send(codec.ConnAck()))
    client.next_event()
    return client, server


def _push_properties(codec: ModuleType) -> Any:
    return codec.Properties(message_expiry_interval=86_400, user_properties=(
        ("msg_id", "4b234e1b6a7d8ddecb1da7fd"), ("kind", "notification")))


def _rate(run: Run, seconds: float, per_call: int) -> float:
    """Packets per CPU second of ``run(n)``, growing n until a run takes ``seconds`` of CPU.

    CPU time of this process (not wall time), so that other processes on a shared machine
    slow the measurement down without skewing it."""
    n = 1000
    while True:
        start = time.process_time()
        run(n)
        elapsed = time.process_time() - start
        if elapsed >= seconds:
            return n * per_call / elapsed
        n = int(n * min(10.0, max(2.0, 1.2 * seconds / max(elapsed, 1e-6))))


def _one_by_one(sender: Any, receiver: Any, event: object, need_data: object) -> Run:
    def run(n: int) -> None:
        send, receive_data, next_event = sender.send, receiver.receive_data, receiver.next_event
        for _ in range(n):
            receive_data(send(event))
            if next_event() is need_data:
                raise AssertionError("packet did not parse")

    return run


def _batched(sender: Any, receiver: Any, event: object, need_data: object,
             batch: int = 100) -> Run:
    def run(n: int) -> None:
        send, receive_data, next_event = sender.send, receiver.receive_data, receiver.next_event
        for _ in range(n // batch):
            receive_data(b"".join([send(event) for _ in range(batch)]))
            while next_event() is not need_data:
                pass

    return run


def _round(codec: ModuleType, version: int, properties: Any | None, *, build: bool) -> Run:
    """Server PUBLISH QoS 1 -> client, client PUBACK -> server (one call = 2 packets)."""
    client, server = _connected_pair(codec, version)
    publish_cls, puback_cls = codec.Publish, codec.PubAck
    extra = {} if properties is None else {"properties": properties}
    publish, puback = publish_cls(TOPIC, PAYLOAD, qos=1, packet_id=42, **extra), puback_cls(42)

    def run(n: int) -> None:
        s_send, c_send = server.send, client.send
        c_data, c_next, s_data, s_next = (client.receive_data, client.next_event,
                                          server.receive_data, server.next_event)
        for i in range(n):
            if build:
                packet_id = i % 65535 + 1
                event = publish_cls(TOPIC, PAYLOAD, qos=1, packet_id=packet_id, **(
                    {} if properties is None else {"properties": codec.Properties(
                        message_expiry_interval=86_400 - i % 86_400,
                        user_properties=properties.user_properties)}))
                c_data(s_send(event))
                c_next()
                s_data(c_send(puback_cls(packet_id)))
            else:
                c_data(s_send(publish))
                c_next()
                s_data(c_send(puback))
            s_next()

    return run


def cases(codec: ModuleType, *, v5: bool) -> dict[str, tuple[Run, int]]:
    """name -> (run, packets per call) for one codec copy."""
    need = codec.NEED_DATA
    out: dict[str, tuple[Run, int]] = {}
    for version in (4, 5) if v5 else (4,):
        tag = "5.0" if version == 5 else "3.1.1"
        client, server = _connected_pair(codec, version)
        publish = codec.Publish(TOPIC, PAYLOAD, qos=1, packet_id=42)
        out[f"{tag} PINGREQ c->s"] = (_one_by_one(client, server, codec.PingReq(), need), 1)
        out[f"{tag} PINGRESP s->c"] = (_one_by_one(server, client, codec.PingResp(), need), 1)
        out[f"{tag} PUBLISH QoS1 200 B s->c"] = (_one_by_one(server, client, publish, need), 1)
        out[f"{tag} PUBACK c->s"] = (_one_by_one(client, server, codec.PubAck(42), need), 1)
        out[f"{tag} PUBLISH x100 per chunk"] = (_batched(server, client, publish, need), 1)
        out[f"{tag} round PUBLISH+PUBACK"] = (_round(codec, version, None, build=False), 2)
        out[f"{tag} round, built each time"] = (_round(codec, version, None, build=True), 2)
        if version == 5:
            props = _push_properties(codec)
            out["5.0 round, push properties"] = (_round(codec, 5, props, build=False), 2)
            out["5.0 round, push props, built"] = (_round(codec, 5, props, build=True), 2)
    return out


def measure(codecs: dict[str, ModuleType], seconds: float, repeat: int) -> dict[str, dict]:
    """Best packets/s of each case for each codec, the runs interleaved."""
    table = {label: cases(codec, v5=hasattr(codec, "Properties"))
             for label, codec in codecs.items()}
    best: dict[str, dict[str, float]] = {label: {} for label in table}
    for _ in range(repeat):
        for label, runs in table.items():
            for name, (run, per_call) in runs.items():
                rate = _rate(run, seconds, per_call)
                best[label][name] = max(best[label].get(name, 0.0), rate)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per case and run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (best counts)")
    parser.add_argument("--baseline", metavar="DIR",
                        help="another pushsdk/protocol package to compare with")
    args = parser.parse_args(argv)
    codecs = {"this": current}
    if args.baseline:
        codecs = {"baseline": load_codec(args.baseline), **codecs}
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    best = measure(codecs, args.seconds, args.repeat)
    labels = list(best)
    print(f"{'case (encode + decode), packets/s':36}" + "".join(f"{label:>12}" for label in labels)
          + ("   this/baseline" if "baseline" in best else ""))
    for name in best["this"]:
        row = f"{name:36}" + "".join(
            f"{best[label][name]:>12,.0f}" if name in best[label] else f"{'-':>12}"
            for label in labels)
        if "baseline" in best and name in best["baseline"]:
            row += f"   {best['this'][name] / best['baseline'][name]:>6.2f}"
        print(row, flush=True)
    this = best["this"]
    for plain, five in [("3.1.1 round PUBLISH+PUBACK", "5.0 round PUBLISH+PUBACK"),
                        ("3.1.1 round PUBLISH+PUBACK", "5.0 round, push properties"),
                        ("3.1.1 round, built each time", "5.0 round, push props, built")]:
        print(f"{five} / {plain}: {this[five] / this[plain]:.2f}")
    print(f"load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
