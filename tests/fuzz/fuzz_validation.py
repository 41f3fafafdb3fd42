"""Fuzz harness: validation of client input (push and registration bodies, receipts).

Arbitrary bytes as a ``POST /v1/push`` body, a ``POST /v1/devices`` body or an MQTT
receipt: the parsers either return a record or raise ``InvalidRequest`` (400/413); and
whatever they accept can be stored — its text encodes as UTF-8, its payload is JSON.
"""
from __future__ import annotations

import json

from simulator.server.validation import (
    InvalidRequest,
    compact_json,
    parse_device_request,
    parse_json,
    parse_push_request,
    parse_receipt,
)


def configure(args: list[str]) -> None:
    pass


def one_input(data: bytes) -> None:
    if not data:
        return
    door, body = data[0] % 3, data[1:]  # the first byte picks the door
    try:
        if door == 0:
            push = parse_push_request(parse_json(body), default_ttl=86400, max_ttl=2419200,
                                      max_audience=1000, max_payload=4096)
            payload = {"notification": push.notification, "message": push.message}
            json.loads(compact_json(payload))  # storable and JSON again
            for value in (*push.audience.values, push.collapse_key or ""):
                value.encode("utf-8")
        elif door == 1:
            device = parse_device_request(parse_json(body))
            for value in (device.device_id, device.platform):
                value.encode("utf-8")
        else:
            receipt = parse_receipt(body)
            receipt.msg_id.encode("utf-8")
    except InvalidRequest:
        pass
