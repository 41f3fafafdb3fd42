"""Cross-check against an independent implementation: paho-mqtt (Eclipse Paho, the Python
client). Thousands of packets generated from a fixed seed:

- what a client sends (CONNECT, PUBLISH, SUBSCRIBE, UNSUBSCRIBE, DISCONNECT, the
  acknowledgements, PINGREQ) is encoded by paho's own client encoders and must be byte for
  byte what we encode, in MQTT 3.1.1 and 5.0;
- what a server sends (CONNACK, PUBLISH, SUBACK, UNSUBACK, DISCONNECT, acknowledgements
  with reason codes and properties) is encoded by us and decoded by paho's client, whose
  fields must be what we meant;
- the spec's tables as paho writes them (property types and placement, reason codes per
  packet) must agree with ours.

paho is driven without a socket: a Client subclass captures what its encoders queue.
"""
from __future__ import annotations

import random
import string

import pytest
from paho.mqtt import client as paho_client
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.properties import VariableByteIntegers
from paho.mqtt.reasoncodes import ReasonCode as PahoReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from pushsdk.protocol import (
    ConnAck,
    Connect,
    Connection,
    Disconnect,
    PingReq,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Role,
    SubAck,
    Subscribe,
    SubscriptionOptions,
    UnsubAck,
    Unsubscribe,
    Will,
)
from pushsdk.protocol._properties import SPECS, Context, Kind
from pushsdk.protocol._reason import (
    AUTH_REASONS,
    CONNACK_REASONS,
    CONNACK_REASON_FOR_RETURN_CODE,
    DISCONNECT_REASONS,
    DISCONNECT_REASONS_FROM_CLIENT,
    DISCONNECT_REASONS_FROM_SERVER,
    PUBACK_REASONS,
    PUBCOMP_REASONS,
    PUBREC_REASONS,
    PUBREL_REASONS,
    SUBACK_REASONS,
    UNSUBACK_REASONS,
)

SEED = 20240611
COUNT = 300  # per packet kind and version: about 4,000 packets in all
CallbackAPIVersion = paho_client.CallbackAPIVersion

# --- paho, captured ----------------------------------------------------------------------


class _NoSocket:
    def close(self) -> None:
        pass

    def fileno(self) -> int:
        return -1


class CapturingClient(paho_client.Client):
    """A paho Client whose encoders hand their packets to us instead of a socket."""

    def __init__(self, protocol: int) -> None:
        super().__init__(CallbackAPIVersion.VERSION2, client_id="", protocol=protocol,
                         manual_ack=True, reconnect_on_failure=False)
        self.packets: list[bytes] = []
        self.received: list[tuple] = []
        self._sock = _NoSocket()  # type: ignore[assignment]
        got = self.received.append
        self.on_message = lambda client, userdata, message: got(("message", message))
        self.on_connect = lambda c, u, flags, rc, props: got(("connack", flags, rc, props))
        self.on_subscribe = lambda c, u, mid, rcs, props: got(("suback", mid, rcs, props))
        self.on_unsubscribe = lambda c, u, mid, rcs, props: got(("unsuback", mid, rcs, props))
        self.on_disconnect = lambda c, u, flags, rc, props: got(("disconnect", rc, props))

    def _packet_queue(self, command, packet, mid, qos, info=None):  # type: ignore[override]
        self.packets.append(bytes(packet))
        return paho_client.MQTT_ERR_SUCCESS

    def take(self) -> bytes:
        (packet,) = self.packets
        self.packets.clear()
        return packet

    def feed(self, data: bytes) -> tuple:
        """Decode one whole packet with paho's handlers; return what its callback saw."""
        remaining, header = VariableByteIntegers.decode(data[1:])
        assert 1 + header + remaining == len(data)
        self._in_packet = {"command": data[0], "packet": data[1 + header:]}  # type: ignore[assignment]
        self._sock = _NoSocket()  # type: ignore[assignment]
        kind = data[0] & 0xF0
        handler = {0x20: self._handle_connack, 0x30: self._handle_publish,
                   0x90: self._handle_suback, 0xB0: self._handle_unsuback,
                   0xE0: self._handle_disconnect}[kind]
        handler()
        if kind == 0x30 and data[0] & 0x06 == 0x04:  # QoS 2: held until PUBREL
            (message,) = self._in_messages.values()
            self._in_messages.clear()
            self.received.append(("message", message))
        (seen,) = self.received
        self.received.clear()
        return seen


PAHO_NAME = {ident: name.replace(" ", "") for name, ident in PahoProperties(1).names.items()}
_PACKET = {Context.CONNECT: PacketTypes.CONNECT, Context.CONNACK: PacketTypes.CONNACK,
           Context.PUBLISH: PacketTypes.PUBLISH, Context.PUBACK: PacketTypes.PUBACK,
           Context.PUBREC: PacketTypes.PUBREC, Context.PUBREL: PacketTypes.PUBREL,
           Context.PUBCOMP: PacketTypes.PUBCOMP, Context.SUBSCRIBE: PacketTypes.SUBSCRIBE,
           Context.SUBACK: PacketTypes.SUBACK, Context.UNSUBSCRIBE: PacketTypes.UNSUBSCRIBE,
           Context.UNSUBACK: PacketTypes.UNSUBACK, Context.DISCONNECT: PacketTypes.DISCONNECT,
           Context.AUTH: PacketTypes.AUTH, Context.WILL: PacketTypes.WILLMESSAGE}


def to_paho(props: Properties, context: Context) -> PahoProperties | None:
    if not props:
        return None
    paho = PahoProperties(_PACKET[context])
    by_name = {spec.name: spec for spec in SPECS}
    for name, value in props.as_dict().items():
        spec = by_name[name]
        if spec.kind is Kind.BOOL:
            value = int(value)
        elif spec.repeatable:
            value = list(value)
        setattr(paho, PAHO_NAME[spec.ident], value)
    return paho


def from_paho(paho: PahoProperties | None) -> dict:
    """paho's properties as our field names and types."""
    out: dict = {}
    if paho is None:
        return out
    for spec in SPECS:
        name = PAHO_NAME[spec.ident]
        if hasattr(paho, name):
            value = getattr(paho, name)
            if spec.kind is Kind.BOOL:
                value = bool(value)
            elif spec.repeatable:
                value = tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in value)
            out[spec.name] = value
    return out


# --- generated values --------------------------------------------------------------------

# No U+FEFF: paho refuses it in properties, reading [MQTT-1.5.4-3] ("MUST NOT be skipped
# over or stripped off") as a ban; we keep it (test_codec5_wire.test_utf8_bom_is_kept).
_ALPHABET = string.ascii_letters + string.digits + " -_.é中ß€😀"


def rand_text(rng: random.Random, low: int = 0, high: int = 12) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(low, high)))


def rand_topic(rng: random.Random) -> str:
    return "/".join(rand_text(rng, 1, 6).replace("/", "") for _ in range(rng.randint(1, 4)))


def rand_filter(rng: random.Random) -> str:
    levels = [rng.choice(["+", rand_text(rng, 1, 5)]) for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.3:
        levels.append("#")
    return "/".join(levels)


def _rand_value(rng: random.Random, spec) -> object:
    kind = spec.kind
    if kind is Kind.BOOL:
        return rng.random() < 0.5
    if kind is Kind.BYTE:
        return rng.randint(0, 1)
    if kind is Kind.TWO_BYTE:
        return rng.choice([max(spec.minimum, 0), 1, 255, 256, 65535, rng.randint(1, 65535)])
    if kind is Kind.FOUR_BYTE:
        top = 268_435_455 if spec.name == "maximum_packet_size" else 0xFFFF_FFFF
        return rng.choice([max(spec.minimum, 0), 1, 65536, top, rng.randint(1, top)])
    if kind is Kind.VARINT:
        return tuple(rng.choice([1, 127, 128, 16_383, 16_384, 2_097_152, 268_435_455,
                                 rng.randint(1, 268_435_455)]) for _ in range(rng.randint(1, 3)))
    if kind is Kind.BINARY:
        return rng.randbytes(rng.randint(0, 20))
    if kind is Kind.UTF8_PAIR:
        return tuple((rand_text(rng), rand_text(rng)) for _ in range(rng.randint(1, 4)))
    return rand_topic(rng) if spec.name == "response_topic" else rand_text(rng)


def rand_properties(rng: random.Random, context: Context, *, skip: tuple[str, ...] = (),
                    single_id: bool = False) -> Properties:
    values = {}
    for spec in SPECS:
        if spec.contexts & context and spec.name not in skip and rng.random() < 0.4:
            value = _rand_value(rng, spec)
            if single_id and spec.name == "subscription_identifiers":
                value = value[:1]
            values[spec.name] = value
    return Properties(**values)


def rand_reason(rng: random.Random, allowed) -> int:
    return rng.choice(sorted(allowed))


def cases(kind: str, version: int):
    rng = random.Random(f"{SEED}-{kind}-{version}")
    return [random.Random(rng.random()) for _ in range(COUNT)]


def connected_client(version: int) -> Connection:
    conn = Connection(Role.CLIENT, protocol_version=version)
    conn.send(Connect(client_id="c", protocol_level=version,
                      properties=Properties(topic_alias_maximum=65535) if version == 5
                      else Properties()))
    # A 5.0 server that takes Topic Aliases up to 65535.
    conn.receive_data(b"\x20\x06\x00\x00\x03\x22\xff\xff" if version == 5 else b"\x20\x02\x00\x00")
    conn.next_event()
    return conn


def connected_server(version: int) -> Connection:
    client = Connection(Role.CLIENT, protocol_version=version)
    server = Connection(Role.SERVER, protocol_version=None)
    server.receive_data(client.send(Connect(
        client_id="c", protocol_level=version,
        properties=Properties(topic_alias_maximum=65535) if version == 5 else Properties())))
    server.next_event()
    server.send(ConnAck())
    return server


PROTOCOL = {4: paho_client.MQTTv311, 5: paho_client.MQTTv5}
#: Reason codes the spec allows and paho 2.2 does not know for the packet.
PAHO_LACKS = {PacketTypes.CONNACK: frozenset({0x99})}

# --- client packets: paho's encoders and ours, byte for byte --------------------------------


@pytest.mark.parametrize("version", [3, 4, 5])
def test_connect_bytes_match_paho(version):
    for rng in cases("connect", version):
        level = version
        paho = CapturingClient(paho_client.MQTTv31 if version == 3 else PROTOCOL.get(version))
        client_id = rand_text(rng, 1)
        clean = rng.random() < 0.5
        keepalive = rng.choice([0, 1, 60, 65535, rng.randint(0, 65535)])
        username = rand_text(rng) if rng.random() < 0.6 else None
        password = (rng.randbytes(rng.randint(0, 16))
                    if username is not None and rng.random() < 0.6 else None)
        will = None
        if rng.random() < 0.5:
            will_props = rand_properties(rng, Context.WILL) if level == 5 else Properties()
            will = Will(rand_topic(rng), rng.randbytes(rng.randint(0, 20)), rng.randint(0, 2),
                        rng.random() < 0.5, will_props)
            paho.will_set(will.topic, will.payload, will.qos, will.retain,
                          to_paho(will.properties, Context.WILL))
        props = rand_properties(rng, Context.CONNECT) if level == 5 else Properties()
        if props.authentication_data is not None and props.authentication_method is None:
            props = Properties(**{**props.as_dict(), "authentication_method": "m"})
        ours = Connect(client_id=client_id, keepalive=keepalive, clean_session=clean,
                       username=username, password=password, will=will, protocol_level=level,
                       properties=props)
        paho._client_id = client_id.encode()
        if level == 5:
            paho._clean_start = clean
            paho._connect_properties = to_paho(props, Context.CONNECT)
        else:
            paho._clean_session = clean
        paho._username = None if username is None else username.encode()
        paho._password = password
        paho._send_connect(keepalive)
        assert Connection(Role.CLIENT, protocol_version=None).send(ours) == paho.take(), ours


@pytest.mark.parametrize("version", [4, 5])
def test_publish_bytes_match_paho(version):
    paho = CapturingClient(PROTOCOL[version])
    conn = connected_client(version)
    for rng in cases("publish", version):
        qos = rng.randint(0, 2)
        packet_id = rng.randint(1, 65535) if qos else None
        props = (rand_properties(rng, Context.PUBLISH, skip=("subscription_identifiers",))
                 if version == 5 else Properties())
        event = Publish(rand_topic(rng), rng.randbytes(rng.choice([0, 1, 100, 200, 20_000])),
                        qos, rng.random() < 0.5, qos > 0 and rng.random() < 0.5, packet_id,
                        props)
        paho._send_publish(packet_id or 0, event.topic.encode(), event.payload, qos,
                           event.retain, event.dup, None, to_paho(props, Context.PUBLISH))
        assert conn.send(event) == paho.take(), event
        if qos:  # keep Receive Maximum happy
            conn.receive_data(b"\x40\x02" + packet_id.to_bytes(2, "big"))
            conn.next_event()


@pytest.mark.parametrize("version", [4, 5])
def test_subscribe_and_unsubscribe_bytes_match_paho(version):
    paho = CapturingClient(PROTOCOL[version])
    conn = connected_client(version)
    for rng in cases("subscribe", version):
        packet_id = rng.randint(1, 65535)
        entries, paho_entries = [], []
        for _ in range(rng.randint(1, 4)):
            topic_filter = rand_filter(rng)
            qos = rng.randint(0, 2)
            if version == 5:
                options = SubscriptionOptions(qos, no_local=rng.random() < 0.5,
                                              retain_as_published=rng.random() < 0.5,
                                              retain_handling=rng.randint(0, 2))
                paho_entries.append((topic_filter.encode(), SubscribeOptions(
                    qos, options.no_local, options.retain_as_published, options.retain_handling)))
                entries.append((topic_filter, options))
            else:
                paho_entries.append((topic_filter.encode(), qos))
                entries.append((topic_filter, qos))
        props = (rand_properties(rng, Context.SUBSCRIBE, single_id=True) if version == 5
                 else Properties())
        paho._last_mid = packet_id - 1
        paho._send_subscribe(False, paho_entries, to_paho(props, Context.SUBSCRIBE))
        assert conn.send(Subscribe(packet_id, tuple(entries), props)) == paho.take()
        filters = tuple(rand_filter(rng) for _ in range(rng.randint(1, 4)))
        props = rand_properties(rng, Context.UNSUBSCRIBE) if version == 5 else Properties()
        paho._last_mid = packet_id - 1
        paho._send_unsubscribe(False, [f.encode() for f in filters],
                               to_paho(props, Context.UNSUBSCRIBE))
        assert conn.send(Unsubscribe(packet_id, filters, props)) == paho.take()


@pytest.mark.parametrize("version", [4, 5])
def test_ack_ping_and_disconnect_bytes_match_paho(version):
    paho = CapturingClient(PROTOCOL[version])
    conn = connected_client(version)
    commands = {PubAck: paho_client.PUBACK, PubRec: paho_client.PUBREC,
                PubRel: paho_client.PUBREL | 2, PubComp: paho_client.PUBCOMP}
    for rng in cases("acks", version):
        cls = rng.choice(list(commands))
        packet_id = rng.randint(1, 65535)
        paho._send_command_with_mid(commands[cls], packet_id, False)
        assert conn.send(cls(packet_id)) == paho.take()
    paho._send_pingreq()
    assert conn.send(PingReq()) == paho.take()
    if version == 4:
        paho._send_disconnect()
        assert conn.send(Disconnect()) == paho.take()
        return
    for rng in cases("disconnect", version):
        reason = rand_reason(rng, DISCONNECT_REASONS_FROM_CLIENT)
        props = rand_properties(rng, Context.DISCONNECT, skip=("session_expiry_interval",))
        event = Disconnect(reason, props)
        paho_reason = None if not reason and not props else PahoReasonCode(
            PacketTypes.DISCONNECT, identifier=reason)
        paho._send_disconnect(paho_reason, to_paho(props, Context.DISCONNECT))
        assert connected_client(5).send(event) == paho.take(), event


# --- server packets: ours decoded by paho ----------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
def test_publish_from_the_server_decodes_in_paho(version):
    server = connected_server(version)
    for rng in cases("publish-down", version):
        paho = CapturingClient(PROTOCOL[version])
        qos = rng.randint(0, 2)
        props = rand_properties(rng, Context.PUBLISH) if version == 5 else Properties()
        event = Publish(rand_topic(rng), rng.randbytes(rng.choice([0, 1, 300, 20_000])), qos,
                        rng.random() < 0.5, qos > 0 and rng.random() < 0.5,
                        rng.randint(1, 65535) if qos else None, props)
        data = server.send(event)
        if qos:
            server.receive_data(b"\x40\x02" + event.packet_id.to_bytes(2, "big"))
            server.next_event()
        _, message = paho.feed(data)
        assert (message.topic, message.payload, message.qos, message.retain, message.dup,
                message.mid) == (event.topic, event.payload, qos, event.retain, event.dup,
                                 event.packet_id or 0)
        if version == 5:
            assert from_paho(message.properties) == props.as_dict()


@pytest.mark.parametrize("version", [4, 5])
def test_connack_decodes_in_paho(version):
    for rng in cases("connack", version):
        paho = CapturingClient(PROTOCOL[version])
        if version == 5:
            code = rand_reason(rng, CONNACK_REASONS - PAHO_LACKS[PacketTypes.CONNACK])
            props = rand_properties(rng, Context.CONNACK)
        else:
            code, props = rng.choice([0, 3, 4, 5]), Properties()  # paho retries on 1 and 2
        event = ConnAck(code, session_present=not code and rng.random() < 0.5, properties=props)
        server = Connection(Role.SERVER, protocol_version=None)
        server.receive_data(Connection(Role.CLIENT, protocol_version=version).send(
            Connect(client_id="c", protocol_level=version)))
        server.next_event()
        _, flags, reason, paho_props = paho.feed(server.send(event))
        assert flags.session_present == event.session_present
        # paho reads a 3.1.1 return code as the 5.0 reason code: our mapping must agree.
        assert reason.value == (code if version == 5 else CONNACK_REASON_FOR_RETURN_CODE[code])
        if version == 5:
            assert from_paho(paho_props) == props.as_dict()


@pytest.mark.parametrize("version", [4, 5])
def test_suback_and_unsuback_decode_in_paho(version):
    server = connected_server(version)
    for rng in cases("suback", version):
        paho = CapturingClient(PROTOCOL[version])
        packet_id = rng.randint(1, 65535)
        allowed = SUBACK_REASONS if version == 5 else (0, 1, 2, 0x80)
        codes = tuple(rand_reason(rng, allowed) for _ in range(rng.randint(1, 5)))
        props = rand_properties(rng, Context.SUBACK) if version == 5 else Properties()
        _, mid, reasons, paho_props = paho.feed(server.send(SubAck(packet_id, codes, props)))
        assert mid == packet_id and [r.value for r in reasons] == list(codes)
        if version == 5:
            assert from_paho(paho_props) == props.as_dict()
            codes = tuple(rand_reason(rng, UNSUBACK_REASONS) for _ in range(rng.randint(1, 5)))
            props = rand_properties(rng, Context.UNSUBACK)
            _, mid, reasons, paho_props = paho.feed(server.send(UnsubAck(packet_id, codes, props)))
            assert [r.value for r in reasons] == list(codes)
            assert from_paho(paho_props) == props.as_dict()
        else:
            _, mid, reasons, paho_props = paho.feed(server.send(UnsubAck(packet_id)))
        assert mid == packet_id


def test_disconnect_from_the_server_decodes_in_paho():
    for rng in cases("disconnect-down", 5):
        paho = CapturingClient(paho_client.MQTTv5)
        reason = rand_reason(rng, DISCONNECT_REASONS_FROM_SERVER)
        props = rand_properties(rng, Context.DISCONNECT, skip=("session_expiry_interval",))
        _, paho_reason, paho_props = paho.feed(connected_server(5).send(Disconnect(reason, props)))
        assert paho_reason.value == reason
        assert from_paho(paho_props) == props.as_dict()


@pytest.mark.parametrize(("cls", "allowed", "context", "packet"), [
    (PubAck, PUBACK_REASONS, Context.PUBACK, PacketTypes.PUBACK),
    (PubRec, PUBREC_REASONS, Context.PUBREC, PacketTypes.PUBREC),
    (PubRel, PUBREL_REASONS, Context.PUBREL, PacketTypes.PUBREL),
    (PubComp, PUBCOMP_REASONS, Context.PUBCOMP, PacketTypes.PUBCOMP),
])
def test_acknowledgements_with_reasons_decode_with_paho(cls, allowed, context, packet):
    """paho's client answers these only for its own messages, so the variable header is
    read here and paho decodes what is in it: the reason code and the properties."""
    server = connected_server(5)
    for rng in cases(cls.__name__, 5):
        reason = rand_reason(rng, allowed)
        props = rand_properties(rng, context)
        data = server.send(cls(rng.randint(1, 65535), reason, props))
        remaining, header = VariableByteIntegers.decode(data[1:])
        body = data[1 + header:]
        if len(body) > 2:
            code = PahoReasonCode(packet)
            code.unpack(body[2:3])
            assert code.value == reason
        else:
            assert reason == 0
        if len(body) > 3:
            paho_props, used = PahoProperties(packet).unpack(body[3:])
            assert 3 + used == len(body)
            assert from_paho(paho_props) == props.as_dict()
        else:
            assert not props


# --- the spec's tables, as paho has them ------------------------------------------------------


def test_property_table_matches_paho():
    paho = PahoProperties(1)
    kinds = {Kind.BYTE: "Byte", Kind.BOOL: "Byte", Kind.TWO_BYTE: "Two Byte Integer",
             Kind.FOUR_BYTE: "Four Byte Integer", Kind.VARINT: "Variable Byte Integer",
             Kind.UTF8: "UTF-8 Encoded String", Kind.BINARY: "Binary Data",
             Kind.UTF8_PAIR: "UTF-8 String Pair"}
    assert {spec.ident for spec in SPECS} == set(paho.properties)
    for spec in SPECS:
        type_index, packets = paho.properties[spec.ident]
        assert paho.types[type_index] == kinds[spec.kind], spec.name
        ours = {packet for context, packet in _PACKET.items() if spec.contexts & context}
        assert ours == set(packets), spec.name
        assert spec.repeatable == paho.allowsMultiple(PAHO_NAME[spec.ident]), spec.name


@pytest.mark.parametrize(("allowed", "packet"), [
    (CONNACK_REASONS, PacketTypes.CONNACK), (PUBACK_REASONS, PacketTypes.PUBACK),
    (PUBREC_REASONS, PacketTypes.PUBREC), (PUBREL_REASONS, PacketTypes.PUBREL),
    (PUBCOMP_REASONS, PacketTypes.PUBCOMP), (SUBACK_REASONS, PacketTypes.SUBACK),
    (UNSUBACK_REASONS, PacketTypes.UNSUBACK), (DISCONNECT_REASONS, PacketTypes.DISCONNECT),
    (AUTH_REASONS, PacketTypes.AUTH),
])
def test_reason_codes_per_packet_match_paho(allowed, packet):
    """The same sets, but for paho's one gap: 0x99 in CONNACK (§3.2.2.2 lists it: "The
    Will Payload does not match the specified Payload Format Indicator")."""
    paho_allowed = set(PAHO_LACKS.get(packet, ()))
    for value in range(256):
        try:
            PahoReasonCode(packet, identifier=value)
        except (KeyError, ValueError):
            continue
        paho_allowed.add(value)
    assert set(allowed) == paho_allowed
