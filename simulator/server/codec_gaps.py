"""What the server needs from the MQTT codec that its public API does not offer yet.

Two pieces, kept here so that switching to the codec's own is a few lines:

* **Version detection.** The 3.1.1 codec refuses an MQTT 5 CONNECT with a
  ``RemoteProtocolError``; MQTT-3.1.2-2 wants CONNACK 1 ("unacceptable protocol level")
  before the close. :func:`other_mqtt_version` tells that case from other garbage by the
  CONNECT's protocol name and level. To be replaced by the codec's error hint (the
  CONNACK return/reason code to answer with) once MQTT 5.0 lands in ``pushsdk.protocol``.
* **Encoding a refusal** after the codec's state machine is in ERROR. The bytes come from
  the codec's public API all the same: a client-role and a server-role ``Connection``
  exchange a CONNECT, and the server side encodes the CONNACK (done once, at import). To
  be replaced by the codec's public stateless encoder.
"""
from __future__ import annotations

from pushsdk.protocol import ConnAck, ConnackCode, Connect, Connection, Role

__all__ = ["UNSUPPORTED_VERSION_CONNACK", "other_mqtt_version"]


def _refusal(code: int) -> bytes:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    server.receive_data(client.send(Connect(client_id="encoder")))
    server.next_event()
    return server.send(ConnAck(return_code=code))


#: CONNACK 1, "unacceptable protocol level", for clients of other MQTT versions.
UNSUPPORTED_VERSION_CONNACK = _refusal(ConnackCode.UNACCEPTABLE_PROTOCOL_VERSION)


def other_mqtt_version(head: bytes) -> bool:
    """Whether ``head`` (a connection's first bytes) starts a CONNECT for an MQTT version
    other than 3.1/3.1.1 (MQTT 5: protocol name "MQTT", level 5)."""
    if not head or head[0] != 0x10:
        return False
    i = 1
    while i < min(len(head), 4) and head[i] & 0x80:
        i += 1
    name = i + 1  # protocol name, after the remaining length
    level = head[name + 6:name + 7]
    return head[name:name + 6] == b"\x00\x04MQTT" and level not in (b"", b"\x04")
