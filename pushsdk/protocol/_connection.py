"""The sans-IO MQTT connection (3.1.1 and 5.0): bytes in, events out; events in, bytes out.

:class:`Connection` does no I/O and never blocks. The caller moves bytes between it and a
transport::

    conn = Connection(Role.CLIENT, protocol_version=5)
    await stream.send_all(conn.send(Connect(client_id="dev1", protocol_level=5)))
    while True:
        try:
            event = conn.next_event()
        except RemoteProtocolError as exc:
            if exc.answer is not None:  # what MQTT says to send before closing
                await stream.send_all(conn.send(exc.answer))
            raise
        if event is NEED_DATA:
            conn.receive_data(await stream.receive_some())  # b"" means EOF
        elif isinstance(event, ConnectionClosed):
            break
        else:
            ...
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from . import _wire, _wire5
from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import ConnAck, Connect, ConnectionClosed, Disconnect, Event, PingReq, PingResp
from ._reason import (
    CONNACK_REASON_FOR_RETURN_CODE,
    CONNACK_REASONS,
    DISCONNECT_REASONS_FROM_CLIENT,
    DISCONNECT_REASONS_FROM_SERVER,
    ConnackCode,
    ReasonCode,
)
from ._session5 import Limits5
from ._state import (
    CLOSED,
    CONNECTED,
    CONNECTING,
    ERROR,
    IDLE,
    RECV,
    REFUSED_CONNACK,
    SEND,
    TRANSITIONS,
    TRANSITIONS_V5,
    Direction,
    Role,
    State,
    Table,
    allowed,
)
from ._wire import ALL_PACKET_TYPES, PacketType, first_byte_problem, read_remaining_length

_CONNECTION_CLOSED = ConnectionClosed()
_CONNECT, _CONNACK = PacketType.CONNECT, PacketType.CONNACK
_MQTT_NAMES = {3: "3.1 ('MQIsdp' level 3)", 4: "3.1.1 ('MQTT' level 4)", 5: "5.0 ('MQTT' level 5)"}
_KNOWN_LEVELS = {("MQIsdp", 3), ("MQTT", 4), ("MQTT", 5)}


class _NeedData:
    """Type of :data:`NEED_DATA`. There is exactly one instance."""

    __slots__ = ()
    _instance: _NeedData | None = None

    def __new__(cls) -> _NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"

    def __reduce__(self) -> str:
        return "NEED_DATA"  # copy and pickle give back the module-level singleton


#: Returned by :meth:`Connection.next_event` when a whole packet is not buffered yet.
NEED_DATA = _NeedData()


# --- CONNECT, whose form (and so the version) is read from the packet ----------------------


def _levels(version: int | None) -> frozenset[int]:
    return frozenset({3, 4} if version == 4 else {5} if version == 5 else {3, 4, 5})


def _connect_encoder(version: int | None) -> Callable[[Any], bytes]:
    accepted = _levels(version)

    def encode(event: Connect) -> bytes:
        level = event.protocol_level
        if level not in accepted:
            raise LocalProtocolError(
                f"CONNECT protocol_level {level} on a Connection made for MQTT "
                f"{'5.0' if version == 5 else '3.1.1'} (protocol_version={version}); build "
                f"Connect(..., protocol_level={version}) or pass protocol_version={level}"
            )
        return _wire5.encode_connect(event) if level == 5 else _wire.encode_connect(event)

    return encode


def _connect_decoder(version: int | None) -> _wire.Decoder:
    accepted = _levels(version)
    spoken = " or ".join(_MQTT_NAMES[level] for level in sorted(accepted, reverse=True))

    def decode(first: int, buf: bytearray, pos: int, end: int) -> Connect:
        name, level, pos = _wire.connect_level(buf, pos, end)
        if (name, level) not in _KNOWN_LEVELS or level not in accepted:
            # MQTT-3.1.2-2: an unsupported level is answered CONNACK 1 / 0x84; another
            # protocol name may just be closed (MQTT-3.1.2-1).
            mqtt = name in ("MQTT", "MQIsdp")
            raise RemoteProtocolError(
                f"CONNECT protocol {name!r} level {level} is not MQTT {spoken}",
                reason_code=ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
                connack_return_code=ConnackCode.UNACCEPTABLE_PROTOCOL_VERSION if mqtt else None,
            )
        if level == 5:
            return _wire5.decode_connect_body(level, buf, pos, end)
        return _wire.decode_connect_body(level, buf, pos, end)

    return decode


# Per (role, state, version): what may be sent, keyed by event class, with its encoder; and
# what may be received, indexed by packet type number, with its decoder. Compiled once from
# the transition tables so the per-packet cost is one lookup. ``version`` is 4 or 5, or (in
# IDLE only, where CONNECT decides) None for "whichever the CONNECT says".
# The third item says whether the MQTT 5.0 limits are checked for the packet: in 5.0, once
# the CONNECT has passed, for everything but PINGREQ/PINGRESP once connected (two bytes:
# no limit applies to them then).
_SendRules = dict[type, tuple[State, Callable[[Any], bytes], bool]]
_RecvRules = list[tuple[State, _wire.Decoder, bool] | None]


def _compile(role: Role, state: State, version: int | None) -> tuple[_SendRules, _RecvRules]:
    table = TRANSITIONS_V5 if version == 5 else TRANSITIONS
    encoders = _wire5.ENCODERS if version == 5 else _wire.ENCODERS
    decoders = _wire5.DECODERS if version == 5 else _wire.DECODERS
    send: _SendRules = {}
    recv: _RecvRules = [None] * 16
    for (r, s, direction, packet), next_state in table.items():
        if (r, s) != (role, state) or packet is REFUSED_CONNACK:
            continue
        checked = version == 5 and state is not IDLE and (
            state is not CONNECTED or packet not in (PingReq, PingResp))
        if direction is SEND:
            encode = _connect_encoder(version) if packet is Connect else encoders[packet]  # type: ignore[index]
            send[packet] = (next_state, encode, checked)  # type: ignore[index]
        else:
            kind = ALL_PACKET_TYPES[packet]  # type: ignore[index]
            decode = _connect_decoder(version) if packet is Connect else decoders[kind]
            recv[kind] = (next_state, decode, checked)  # type: ignore[assignment]
    return send, recv


_RULES = {
    (role, state, version): _compile(role, state, version)
    for role in Role for state in State for version in (4, 5, None)
}


def _no_check(*args: Any) -> None:
    raise AssertionError("MQTT 5.0 limits checked before the CONNECT")  # never: see _compile


def _answer_reason(reason: ReasonCode | None, allowed_codes: frozenset[int]) -> ReasonCode:
    if reason is not None and reason >= 0x80 and reason in allowed_codes:
        return reason
    return ReasonCode.PROTOCOL_ERROR


class Connection:
    """One end of an MQTT 3.1.1 or 5.0 connection, as a state machine over bytes.

    ``protocol_version``: 4 (the default) speaks MQTT 3.1.1 (and 3.1, whose packets are the
    same); 5 speaks MQTT 5.0; None takes the version from the CONNECT — the one the client
    sends, or, for a server, the one it receives (any of 3.1, 3.1.1, 5.0). A server that
    receives a CONNECT for a version it does not speak raises a RemoteProtocolError whose
    ``answer`` is the refusing CONNACK to send. :attr:`protocol_version` says the version in
    use once the CONNECT has passed.

    ``max_packet_size`` bounds the whole size (fixed header included) of *received* packets;
    a bigger one is refused as soon as its remaining length is known, before its body is
    buffered (in 5.0 with reason 0x95, and a Maximum Packet Size we declare in our CONNECT
    or CONNACK lowers the bound further). Sent packets are bounded by MQTT's own limit
    (remaining length 268,435,455) and, in 5.0, by the peer's Maximum Packet Size.
    """

    __slots__ = (
        "_role", "_configured_version", "_protocol_version", "_v5", "_limits", "_check_sent",
        "_check_received", "_valid_first", "_max_packet_size", "_receive_limit", "_buf",
        "_pos", "_eof", "_closed_reported", "_error", "_answer", "_state", "_send_rules",
        "_recv_rules",
    )

    def __init__(
        self, role: Role, *, protocol_version: int | None = 4, max_packet_size: int = 65536
    ) -> None:
        if not isinstance(role, Role):
            raise TypeError(f"role must be a Role, not {role!r}")
        if protocol_version not in (4, 5, None) or type(protocol_version) is bool:
            raise ValueError(f"protocol_version must be 4, 5 or None, not {protocol_version!r}")
        if type(max_packet_size) is not int or max_packet_size < 2:
            raise ValueError(f"max_packet_size must be an int >= 2, not {max_packet_size!r}")
        self._role = role
        self._configured_version = protocol_version
        self._protocol_version = protocol_version
        self._v5 = False
        self._limits: Limits5 | None = None
        # Its sent/received checks, bound once (the per-packet cost of MQTT 5.0's rules).
        self._check_sent: Callable[[Any, bytes], None] = _no_check
        self._check_received: Callable[[Any], Any] = _no_check
        self._valid_first = _wire.VALID_FIRST_BYTE
        self._max_packet_size = self._receive_limit = max_packet_size
        self._buf = bytearray()
        self._pos = 0  # start of the first unparsed byte in _buf
        self._eof = False
        self._closed_reported = False
        self._error: str | None = None  # why we are in ERROR
        self._answer: tuple[type, bool] | None = None  # answer allowed in ERROR: (type, 5.0?)
        self._set_state(IDLE)

    @property
    def role(self) -> Role:
        return self._role

    @property
    def state(self) -> State:
        return self._state

    @property
    def max_packet_size(self) -> int:
        return self._max_packet_size

    @property
    def protocol_version(self) -> int | None:
        """3, 4 or 5 once a CONNECT has passed (its protocol level); before that the
        ``protocol_version`` given to the constructor (None: not known yet)."""
        return self._protocol_version

    @property
    def send_quota(self) -> int | None:
        """How many more QoS 1/2 PUBLISHes may be sent before an acknowledgement frees one
        (the peer's Receive Maximum minus those outstanding, §4.9); None in MQTT 3.1.1."""
        limits = self._limits
        if limits is None:
            return None
        return max(0, limits.peer_receive_maximum - len(limits.sent_unacked))

    @property
    def peer_maximum_packet_size(self) -> int | None:
        """The largest packet the peer accepts (5.0 Maximum Packet Size), None if unbounded."""
        limits = self._limits
        if limits is None or limits.peer_maximum_packet_size > 268_435_460:
            return None
        return limits.peer_maximum_packet_size

    @property
    def peer_topic_alias_maximum(self) -> int:
        """The highest Topic Alias the peer accepts from us (0: none, and always in 3.1.1)."""
        return 0 if self._limits is None else self._limits.peer_topic_alias_maximum

    def connack_code(self, return_code: int) -> int:
        """The CONNACK code saying what the 3.1.1 ``return_code`` says, on this connection:
        the :class:`ConnackCode` itself in 3.1.1, its :class:`ReasonCode` in 5.0 (e.g.
        NOT_AUTHORIZED 5 -> 0x87)."""
        if not self._v5:
            return ConnackCode(return_code)
        return CONNACK_REASON_FOR_RETURN_CODE[return_code]

    def __repr__(self) -> str:
        return (
            f"<Connection {self._role.name} {self._state.name}, "
            f"{len(self._buf) - self._pos} bytes buffered>"
        )

    def _set_state(self, state: State) -> None:
        self._state = state
        version = 5 if self._v5 else self._configured_version if state is IDLE else 4
        self._send_rules, self._recv_rules = _RULES[self._role, state, version]

    def _use_version(self, connect: Connect) -> None:
        """Switch to the version the CONNECT says and read what it declares."""
        level = connect.protocol_level
        self._protocol_version = level
        if level == 5:
            self._v5 = True
            self._valid_first = _wire5.VALID_FIRST_BYTE
            limits = self._limits = Limits5(self._role)
            self._check_sent, self._check_received = limits.sent, limits.received
            self._declare(limits.learn_connect(connect))

    def _declare(self, maximum_packet_size: int | None) -> None:
        if maximum_packet_size is not None:
            self._receive_limit = min(self._max_packet_size, maximum_packet_size)

    def _transition(self, event: Any, next_state: State, direction: Direction) -> None:
        cls = type(event)
        if cls is Connect:
            self._use_version(event)
        elif cls is ConnAck:
            if event.return_code:
                table = TRANSITIONS_V5 if self._v5 else TRANSITIONS
                next_state = table[self._role, self._state, direction, REFUSED_CONNACK]
            elif self._limits is not None:
                self._declare(self._limits.learn_connack(event))
        self._set_state(next_state)

    # --- sending ----------------------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """The bytes to transmit for ``event``; advances the state.

        Raises LocalProtocolError, leaving the state unchanged, if this end may not send it
        now: the state forbids it, the version cannot carry it, or (5.0) it would break a
        limit the peer declared (Receive Maximum, Maximum Packet Size, Topic Alias Maximum,
        Maximum QoS, Retain Available, ...; ``err.reason_code`` says which).
        """
        rule = self._send_rules.get(type(event))
        if rule is None:
            return self._send_refused(event)
        next_state, encode, checked = rule
        data = encode(event)
        if checked:
            self._check_sent(event, data)
        if next_state is not self._state:
            self._transition(event, next_state, SEND)
        return data

    def _send_refused(self, event: Event) -> bytes:
        """Send the one answer an error allows (see RemoteProtocolError.answer), or raise."""
        cls = type(event)
        answer = self._answer
        if answer is not None and cls is answer[0] and (cls is not ConnAck or event.return_code):  # type: ignore[attr-defined]
            data = (_wire5.ENCODERS if answer[1] else _wire.ENCODERS)[cls](event)
            self._answer = None
            return data
        raise LocalProtocolError(self._cannot_send(cls))

    def _table(self) -> Table:
        return TRANSITIONS_V5 if self._v5 else TRANSITIONS

    def _cannot_send(self, cls: type) -> str:
        if cls not in ALL_PACKET_TYPES:
            if cls is ConnectionClosed:
                return "ConnectionClosed is not a packet; close the transport instead"
            return f"cannot send a {cls.__name__}: not an MQTT packet event"
        name = ALL_PACKET_TYPES[cls].name
        table = self._table()
        if not any(k[0] is self._role and k[2] is SEND and k[3] is cls for k in table):
            if any(k[0] is self._role and k[2] is SEND and k[3] is cls for k in TRANSITIONS_V5):
                return f"a {self._role.value} sends {name} only in MQTT 5 (this is 3.1.1)"
            return f"a {self._role.value} never sends {name}"
        return f"{self._role.value} cannot send {name} in state {self._state.name}" + (
            self._allowed_note(SEND)
        )

    def _allowed_note(self, direction: Direction) -> str:
        if self._state is ERROR:
            return f" (after: {self._error})"
        names = [
            ALL_PACKET_TYPES[p].name  # type: ignore[index]
            for p in allowed(self._role, self._state, direction, self._table())
            if p is not REFUSED_CONNACK  # "CONNACK" already covers it
        ]
        if not names:
            verb = "sent" if direction is SEND else "received"
            return f" (nothing may be {verb} in state {self._state.name})"
        return f" (allowed: {', '.join(names)})"

    # --- receiving --------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes from the peer; ``b""`` means the peer closed its side (EOF)."""
        if not data:
            self._eof = True
            return
        if self._eof:
            raise LocalProtocolError("receive_data() called with data after EOF")
        if self._state is ERROR:
            return  # nothing more will be parsed; don't let the buffer grow
        if self._pos:
            # Compact once per chunk, not once per packet: next_event only moves _pos.
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_event(self) -> Event | _NeedData:
        """The next event parsed from received bytes, or NEED_DATA.

        After EOF at a packet boundary, returns :class:`ConnectionClosed` once (and the state
        becomes CLOSED); calling again after that is a LocalProtocolError. Raises
        RemoteProtocolError, moving to ERROR, for invalid bytes, a packet not allowed in this
        state or over the receive limit, a broken 5.0 rule (Receive Maximum, Topic Alias,
        ...), or EOF in the middle of a packet; after that every call raises
        RemoteProtocolError again. The error's ``answer`` is what to send before closing.
        """
        if self._state is ERROR:
            raise RemoteProtocolError(
                f"connection is in state ERROR after: {self._error}", reason_code=None
            )
        buf = self._buf
        pos = self._pos
        available = len(buf) - pos
        if not available:
            if self._eof:
                return self._end_of_stream()
            if pos:  # all consumed: free the bytes now, not at the next receive_data, so
                del buf[:pos]  # an idle connection holds no copy of its last packet
                self._pos = 0
            return NEED_DATA

        # Check type, flags and direction from the first byte alone, so a wrong packet is
        # refused before we wait for (and buffer) its body.
        first = buf[pos]
        rule = self._recv_rules[first >> 4]
        if rule is None or not self._valid_first[first]:
            raise self._fail(*self._cannot_receive(first))
        # Remaining lengths of one and two bytes (packets under 16 KiB) are decoded inline.
        if available >= 2 and buf[pos + 1] < 0x80:
            body = pos + 2
            end = body + buf[pos + 1]
        elif available >= 3 and buf[pos + 2] < 0x80 and (buf[pos + 2] or not self._v5):
            body = pos + 3
            end = body + (buf[pos + 1] & 0x7F | buf[pos + 2] << 7)
        else:
            try:
                header = read_remaining_length(buf, pos, pos + available, minimal=self._v5)
            except RemoteProtocolError as exc:
                raise self._fail(str(exc), ReasonCode.MALFORMED_PACKET) from None
            if header is None:
                return self._need_data()
            remaining, header_length = header
            body = pos + header_length
            end = body + remaining
        if end - pos > self._receive_limit:
            raise self._fail(
                f"{PacketType(first >> 4).name} of {end - pos} bytes (remaining length "
                f"{end - body}) exceeds max_packet_size {self._receive_limit}",
                ReasonCode.PACKET_TOO_LARGE,
            )
        if end > pos + available:
            return self._need_data()

        next_state, decode, checked = rule
        try:
            event = decode(first, buf, body, end)
            if checked:
                event = self._check_received(event)
        except RemoteProtocolError as exc:
            raise self._fail_with(exc, first >> 4 == _CONNECT, body, end) from None
        self._pos = end
        if next_state is not self._state:
            self._transition(event, next_state, RECV)
        return event  # type: ignore[no-any-return]

    def _end_of_stream(self) -> ConnectionClosed:
        """EOF at a packet boundary: ConnectionClosed, once."""
        if self._closed_reported:
            raise LocalProtocolError("next_event() called again after ConnectionClosed")
        self._closed_reported = True
        self._set_state(CLOSED)
        return _CONNECTION_CLOSED

    def events(self) -> Iterator[Event]:
        """Yield buffered events until NEED_DATA; stops after :class:`ConnectionClosed`."""
        while (event := self.next_event()) is not NEED_DATA:
            yield event  # type: ignore[misc]
            if event is _CONNECTION_CLOSED:
                return

    def _need_data(self) -> _NeedData:
        if self._eof:
            raise self._fail("connection closed in the middle of a packet", None, answer=False)
        return NEED_DATA

    # --- errors and their answers -----------------------------------------------------

    def _fail_with(
        self, exc: RemoteProtocolError, in_connect: bool, body: int, end: int
    ) -> RemoteProtocolError:
        level = None
        if in_connect and self._state is IDLE:
            try:
                name, level, _ = _wire.connect_level(self._buf, body, end)
            except RemoteProtocolError:
                level = None
            else:
                if (name, level) not in _KNOWN_LEVELS:
                    level = None
            if level is not None and exc.reason_code is not ReasonCode.UNSUPPORTED_PROTOCOL_VERSION:
                self._protocol_version = level
        return self._fail(str(exc), exc.reason_code, exc.connack_return_code, level=level)

    def _fail(
        self,
        message: str,
        reason: ReasonCode | None,
        connack_code: ConnackCode | None = None,
        *,
        level: int | None = None,
        answer: bool = True,
    ) -> RemoteProtocolError:
        found = self._answer_for(reason, connack_code, level) if answer else None
        self._error = message
        self._answer = None if found is None else (type(found[0]), found[1])
        self._set_state(ERROR)
        return RemoteProtocolError(
            message, reason_code=reason, connack_return_code=connack_code,
            answer=None if found is None else found[0],
        )

    def _answer_for(
        self, reason: ReasonCode | None, connack_code: ConnackCode | None, level: int | None
    ) -> tuple[Event, bool] | None:
        """What to send before closing, and whether in the 5.0 form."""
        state = self._state
        if self._role is Role.SERVER and state in (IDLE, CONNECTING):
            # No CONNACK sent yet: the answer, if any, is a refusing CONNACK.
            if state is IDLE and reason is ReasonCode.UNSUPPORTED_PROTOCOL_VERSION:
                # The 3.1.1 form is the one every client version understands.
                return (ConnAck(connack_code), False) if connack_code else None
            if self._v5 or level == 5:
                return ConnAck(_answer_reason(reason, CONNACK_REASONS)), True
            return (ConnAck(connack_code), False) if connack_code else None
        if self._v5 and state not in (IDLE, CLOSED, ERROR):
            allowed_codes = (DISCONNECT_REASONS_FROM_SERVER if self._role is Role.SERVER
                             else DISCONNECT_REASONS_FROM_CLIENT)
            return Disconnect(_answer_reason(reason, allowed_codes)), True
        return None

    def _cannot_receive(self, first: int) -> tuple[str, ReasonCode]:
        problem = first_byte_problem(first, auth=self._v5)
        if problem:
            return problem, ReasonCode.MALFORMED_PACKET
        kind = first >> 4
        packet = next(cls for cls, ptype in ALL_PACKET_TYPES.items() if ptype == kind)
        name = PacketType(kind).name
        if not any(k[0] is self._role and k[2] is RECV and k[3] is packet
                   for k in self._table()):
            return f"a {self._role.value} never receives {name}", ReasonCode.PROTOCOL_ERROR
        return f"{self._role.value} received {name} in state {self._state.name}" + (
            self._allowed_note(RECV)
        ), ReasonCode.PROTOCOL_ERROR


__all__ = ["NEED_DATA", "Connection"]
