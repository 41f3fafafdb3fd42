"""The sans-IO MQTT 3.1.1 connection: bytes in, events out; events in, bytes out.

:class:`Connection` does no I/O and never blocks. The caller moves bytes between it and a
transport::

    conn = Connection(Role.CLIENT)
    await stream.send_all(conn.send(Connect(client_id="dev1")))
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            conn.receive_data(await stream.receive_some())  # b"" means EOF
        elif isinstance(event, ConnectionClosed):
            break
        else:
            ...
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import ConnAck, ConnectionClosed, Event
from ._state import (
    CLOSED,
    ERROR,
    IDLE,
    RECV,
    REFUSED_CONNACK,
    SEND,
    TRANSITIONS,
    Direction,
    Role,
    State,
    allowed,
)
from ._wire import (
    DECODERS,
    ENCODERS,
    EVENT_CLASS,
    PACKET_TYPE,
    VALID_FIRST_BYTE,
    PacketType,
    first_byte_problem,
    read_remaining_length,
)

_CONNACK = PacketType.CONNACK
_CONNECTION_CLOSED = ConnectionClosed()


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


# Per (role, state): what may be sent, keyed by event class, with its encoder; and what may
# be received, indexed by packet type number. Both are compiled once from TRANSITIONS so the
# per-packet cost is one lookup.
_SendRules = dict[type, tuple[State, Callable[[object], bytes]]]
_RecvRules = list[State | None]


def _compile(role: Role, state: State) -> tuple[_SendRules, _RecvRules]:
    send: _SendRules = {}
    recv: _RecvRules = [None] * 16
    for (r, s, direction, packet), next_state in TRANSITIONS.items():
        if (r, s) != (role, state) or packet is REFUSED_CONNACK:
            continue
        if direction is SEND:
            send[packet] = (next_state, ENCODERS[packet])  # type: ignore[index]
        else:
            recv[PACKET_TYPE[packet]] = next_state  # type: ignore[index]
    return send, recv


_RULES = {(role, state): _compile(role, state) for role in Role for state in State}


class Connection:
    """One end of an MQTT 3.1.1 connection, as a state machine over bytes.

    ``max_packet_size`` bounds the whole size (fixed header included) of *received* packets;
    a bigger one is refused as soon as its remaining length is known, before its body is
    buffered. Sent packets are bounded only by MQTT's own limit (remaining length
    268,435,455).
    """

    def __init__(self, role: Role, *, max_packet_size: int = 65536) -> None:
        if not isinstance(role, Role):
            raise TypeError(f"role must be a Role, not {role!r}")
        if not isinstance(max_packet_size, int) or max_packet_size < 2:
            raise ValueError(f"max_packet_size must be an int >= 2, not {max_packet_size!r}")
        self._role = role
        self._max_packet_size = max_packet_size
        self._buf = bytearray()
        self._pos = 0  # start of the first unparsed byte in _buf
        self._eof = False
        self._closed_reported = False
        self._error: str | None = None  # why we are in ERROR
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

    def __repr__(self) -> str:
        return (
            f"<Connection {self._role.name} {self._state.name}, "
            f"{len(self._buf) - self._pos} bytes buffered>"
        )

    def _set_state(self, state: State) -> None:
        self._state = state
        self._send_rules, self._recv_rules = _RULES[self._role, state]

    # --- sending ----------------------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """The bytes to transmit for ``event``; advances the state.

        Raises LocalProtocolError, leaving the state unchanged, if the event is malformed or
        this end may not send it in the current state.
        """
        cls = type(event)
        rule = self._send_rules.get(cls)
        if rule is None:
            raise LocalProtocolError(self._cannot_send(cls))
        next_state, encode = rule
        data = encode(event)
        if cls is ConnAck and event.return_code:  # type: ignore[union-attr]
            next_state = TRANSITIONS[self._role, self._state, SEND, REFUSED_CONNACK]
        if next_state is not self._state:
            self._set_state(next_state)
        return data

    def _cannot_send(self, cls: type) -> str:
        if cls not in PACKET_TYPE:
            if cls is ConnectionClosed:
                return "ConnectionClosed is not a packet; close the transport instead"
            return f"cannot send a {cls.__name__}: not an MQTT packet event"
        name = PACKET_TYPE[cls].name
        if not any(k[0] is self._role and k[2] is SEND and k[3] is cls for k in TRANSITIONS):
            return f"a {self._role.value} never sends {name}"
        return f"{self._role.value} cannot send {name} in state {self._state.name}" + (
            self._allowed_note(SEND)
        )

    def _allowed_note(self, direction: Direction) -> str:
        if self._state is ERROR:
            return f" (after: {self._error})"
        names = [
            PACKET_TYPE[p].name  # type: ignore[index]
            for p in allowed(self._role, self._state, direction)
            if p is not REFUSED_CONNACK  # "CONNACK" already covers it
        ]
        if not names:
            verb = "sent" if direction is SEND else "received"
            return f" (nothing may be {verb} in state {self._state.name})"
        return f" (allowed: {', '.join(names)})"

    # --- receiving --------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
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
        state or over ``max_packet_size``, or EOF in the middle of a packet; after that every
        call raises RemoteProtocolError again.
        """
        if self._state is ERROR:
            raise RemoteProtocolError(f"connection is in state ERROR after: {self._error}")
        buf = self._buf
        pos = self._pos
        available = len(buf) - pos
        if not available:
            if not self._eof:
                return NEED_DATA
            if self._closed_reported:
                raise LocalProtocolError("next_event() called again after ConnectionClosed")
            self._closed_reported = True
            self._set_state(CLOSED)
            return _CONNECTION_CLOSED

        # Check type, flags and direction from the first byte alone, so a wrong packet is
        # refused before we wait for (and buffer) its body.
        first = buf[pos]
        kind = first >> 4
        next_state = self._recv_rules[kind]
        if next_state is None or not VALID_FIRST_BYTE[first]:
            raise self._fail(self._cannot_receive(first))
        # Remaining lengths of one and two bytes (packets under 16 KiB) are decoded inline.
        if available >= 2 and buf[pos + 1] < 0x80:
            body = pos + 2
            end = body + buf[pos + 1]
        elif available >= 3 and buf[pos + 2] < 0x80:
            body = pos + 3
            end = body + (buf[pos + 1] & 0x7F | buf[pos + 2] << 7)
        else:
            try:
                header = read_remaining_length(buf, pos, pos + available)
            except RemoteProtocolError as exc:
                raise self._fail(str(exc)) from None
            if header is None:
                return self._need_data()
            remaining, header_length = header
            body = pos + header_length
            end = body + remaining
        if end - pos > self._max_packet_size:
            raise self._fail(
                f"{PacketType(kind).name} of {end - pos} bytes (remaining length "
                f"{end - body}) exceeds max_packet_size {self._max_packet_size}"
            )
        if end > pos + available:
            return self._need_data()

        try:
            event = DECODERS[kind](first, buf, body, end)  # type: ignore[misc]
        except RemoteProtocolError as exc:
            raise self._fail(str(exc)) from None
        self._pos = end
        if kind == _CONNACK and event.return_code:
            next_state = TRANSITIONS[self._role, self._state, RECV, REFUSED_CONNACK]
        if next_state is not self._state:
            self._set_state(next_state)
        return event  # type: ignore[return-value]

    def events(self) -> Iterator[Event]:
        """Yield buffered events until NEED_DATA; stops after :class:`ConnectionClosed`."""
        while (event := self.next_event()) is not NEED_DATA:
            yield event  # type: ignore[misc]
            if event is _CONNECTION_CLOSED:
                return

    def _need_data(self) -> _NeedData:
        if self._eof:
            raise self._fail("connection closed in the middle of a packet")
        return NEED_DATA

    def _fail(self, message: str) -> RemoteProtocolError:
        self._error = message
        self._set_state(ERROR)
        return RemoteProtocolError(message)

    def _cannot_receive(self, first: int) -> str:
        problem = first_byte_problem(first)
        if problem:
            return problem
        packet = EVENT_CLASS[first >> 4]
        name = PACKET_TYPE[packet].name
        if not any(k[0] is self._role and k[2] is RECV and k[3] is packet for k in TRANSITIONS):
            return f"a {self._role.value} never receives {name}"
        return f"{self._role.value} received {name} in state {self._state.name}" + (
            self._allowed_note(RECV)
        )


__all__ = ["NEED_DATA", "Connection"]
