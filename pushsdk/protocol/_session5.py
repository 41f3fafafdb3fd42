"""The MQTT 5.0 rules that depend on what the two ends declared: the codec's part of the
session (§4.9 flow control, §3.3.2.3.4 topic aliases, §3.1.2.11 limits, §4.12 AUTH).

A :class:`Limits5` lives in each MQTT 5.0 :class:`Connection`. ``Connection.send`` calls its
``sent_*`` check after encoding (it raises LocalProtocolError *before* changing anything, so
a refused send leaves the connection as it was); ``next_event`` calls its ``received_*``
check after decoding (RemoteProtocolError with the reason code to answer with). What each
end declared is read from the CONNECT and the CONNACK as they pass.

"peer" limits bind what we send; "own" limits are what we declared and bind what we
receive. Packet ids are tracked only as far as Receive Maximum needs: the QoS 1/2 PUBLISHes
sent and not yet acknowledged (PUBACK, PUBCOMP, or PUBREC with a failure code) and the
received ones we have not yet acknowledged. Redelivery stays with the session layer above.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._errors import LocalProtocolError, RemoteProtocolError, protocol_error
from ._events import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    trusted_publish,
)
from ._properties import EMPTY
from ._reason import (
    DISCONNECT_REASONS_FROM_CLIENT,
    DISCONNECT_REASONS_FROM_SERVER,
    ReasonCode,
)
from ._state import Role
from ._topics import shared_subscription, topic_filter_problem

R = ReasonCode
_DEFAULT_RECEIVE_MAXIMUM = 65535
_NO_LIMIT = 1 << 32  # larger than any packet MQTT can express
#: Packets on which a server may not put Reason String or User Properties when the client
#: sent Request Problem Information 0 ([MQTT-3.1.2-29]).
_PROBLEM_INFO_PACKETS = (PubAck, PubRec, PubRel, PubComp, SubAck, UnsubAck, Auth)


def _local(message: str, reason: ReasonCode) -> LocalProtocolError:
    return LocalProtocolError(message, reason_code=reason)


class Limits5:
    """What the two ends of one MQTT 5.0 connection declared, and the state that obeys it."""

    __slots__ = (
        "role", "connected", "peer_receive_maximum", "receive_maximum", "sent_unacked",
        "received_unacked", "peer_maximum_packet_size", "peer_topic_alias_maximum",
        "topic_alias_maximum", "sent_aliases", "received_aliases", "authentication_method",
        "reauthenticating", "peer_maximum_qos", "peer_retain_available", "maximum_qos",
        "retain_available", "wildcards", "subscription_identifiers", "shared",
        "problem_information", "session_expires",
    )

    def __init__(self, role: Role) -> None:
        self.role = role
        self.connected = False  # a CONNACK accepting the connection has passed
        self.peer_receive_maximum = self.receive_maximum = _DEFAULT_RECEIVE_MAXIMUM
        self.sent_unacked: set[int] = set()
        self.received_unacked: set[int] = set()
        self.peer_maximum_packet_size = _NO_LIMIT
        self.peer_topic_alias_maximum = self.topic_alias_maximum = 0
        self.sent_aliases: dict[int, str] = {}
        self.received_aliases: dict[int, str] = {}
        self.authentication_method: str | None = None
        self.reauthenticating = False
        # What the server declared in its CONNACK (§3.2.2.3); it binds the client's sends
        # (peer_*) and the server's receives (the rest).
        self.peer_maximum_qos = self.maximum_qos = 2
        self.peer_retain_available = self.retain_available = True
        self.wildcards = self.subscription_identifiers = self.shared = True
        self.problem_information = True
        self.session_expires = False  # the CONNECT had a non-zero Session Expiry Interval

    # --- what the handshake declares ------------------------------------------------------

    def learn_connect(self, connect: Connect) -> int | None:
        """Read the client's declarations; returns its Maximum Packet Size if we are it."""
        props = connect.properties
        self.authentication_method = props.authentication_method
        self.problem_information = props.request_problem_information is not False
        self.session_expires = bool(props.session_expiry_interval)
        return self._declared(props, client=True)

    def learn_connack(self, connack: ConnAck) -> int | None:
        """Read the server's declarations; returns its Maximum Packet Size if we are it."""
        if connack.return_code:
            return None
        self.connected = True
        props = connack.properties
        qos = 2 if props.maximum_qos is None else props.maximum_qos
        retain = props.retain_available is not False
        if self.role is Role.CLIENT:
            self.peer_maximum_qos, self.peer_retain_available = qos, retain
        else:
            self.maximum_qos, self.retain_available = qos, retain
        self.wildcards = props.wildcard_subscription_available is not False
        self.subscription_identifiers = props.subscription_identifier_available is not False
        self.shared = props.shared_subscription_available is not False
        return self._declared(props, client=False)

    def _declared(self, props: Any, *, client: bool) -> int | None:
        receive_maximum = props.receive_maximum or _DEFAULT_RECEIVE_MAXIMUM
        alias_maximum = props.topic_alias_maximum or 0
        ours = (self.role is Role.CLIENT) == client
        if ours:
            self.receive_maximum, self.topic_alias_maximum = receive_maximum, alias_maximum
            return props.maximum_packet_size  # type: ignore[no-any-return]
        self.peer_receive_maximum, self.peer_topic_alias_maximum = receive_maximum, alias_maximum
        self.peer_maximum_packet_size = props.maximum_packet_size or _NO_LIMIT
        return None

    # --- sending --------------------------------------------------------------------------

    def sent(self, event: Any, data: bytes) -> None:
        """Check (then record) a packet about to be sent; raises LocalProtocolError."""
        if len(data) > self.peer_maximum_packet_size:
            raise _local(
                f"{type(event).__name__.upper()} of {len(data)} bytes exceeds the peer's "
                f"Maximum Packet Size {self.peer_maximum_packet_size} (MQTT-3.1.2-24)",
                R.PACKET_TOO_LARGE,
            )
        cls = type(event)
        if not self.connected and self.authentication_method is not None:
            self._sent_before_connack(cls)
        # The commonest packets in their commonest form first, inline: a PUBLISH without
        # Topic Alias or Subscription Identifier within the limits, and PUBACK/PUBCOMP
        # without properties. The rest, and every error, go the long way.
        if cls is Publish:
            qos = event.qos
            props = event.properties
            if ((props is EMPTY or (props.topic_alias is None
                                    and not props.subscription_identifiers))
                    and qos <= self.peer_maximum_qos
                    and (self.peer_retain_available or not event.retain)):
                if not qos:
                    return
                unacked = self.sent_unacked
                if len(unacked) < self.peer_receive_maximum or event.packet_id in unacked:
                    unacked.add(event.packet_id)
                    return
            self._sent_publish(event)
        elif (cls is PubAck or cls is PubComp) and event.properties is EMPTY:
            self.received_unacked.discard(event.packet_id)
        else:
            check = _SENT.get(cls)
            if check is not None:
                check(self, event)

    def _sent_before_connack(self, cls: type) -> None:
        if self.role is Role.CLIENT and cls not in (Auth, Disconnect, Connect):
            raise _local(
                "a client using enhanced authentication may send only AUTH or DISCONNECT "
                "before the CONNACK (MQTT-3.1.2-30)", R.PROTOCOL_ERROR)

    def _sent_publish(self, event: Publish) -> None:
        qos = event.qos
        if qos:
            if qos > self.peer_maximum_qos:
                raise _local(f"PUBLISH QoS {qos} exceeds the server's Maximum QoS "
                             f"{self.peer_maximum_qos} (MQTT-3.2.2-11)", R.QOS_NOT_SUPPORTED)
            unacked = self.sent_unacked
            if event.packet_id not in unacked and len(unacked) >= self.peer_receive_maximum:
                raise _local(
                    f"sending another QoS {qos} PUBLISH would exceed the peer's Receive "
                    f"Maximum {self.peer_receive_maximum} (MQTT-3.3.4-9)",
                    R.RECEIVE_MAXIMUM_EXCEEDED)
        props = event.properties
        if props is not EMPTY:
            self._sent_publish_properties(event)
        if event.retain and not self.peer_retain_available:
            raise _local("PUBLISH with retain, but the server has Retain Available 0 "
                         "(MQTT-3.2.2-14)", R.RETAIN_NOT_SUPPORTED)
        if qos:
            self.sent_unacked.add(event.packet_id)  # type: ignore[arg-type]
        if props.topic_alias is not None and event.topic:
            self.sent_aliases[props.topic_alias] = event.topic

    def _sent_publish_properties(self, event: Publish) -> None:
        props = event.properties
        if props.subscription_identifiers and self.role is Role.CLIENT:
            raise _local("a PUBLISH from a client must not carry a Subscription Identifier "
                         "(MQTT-3.3.4-6)", R.PROTOCOL_ERROR)
        alias = props.topic_alias
        if alias is None:
            return
        if alias > self.peer_topic_alias_maximum:
            raise _local(f"PUBLISH Topic Alias {alias} exceeds the peer's Topic Alias Maximum "
                         f"{self.peer_topic_alias_maximum} (MQTT-3.3.2-7)",
                         R.TOPIC_ALIAS_INVALID)
        if not event.topic and alias not in self.sent_aliases:
            raise _local(f"PUBLISH with an empty topic uses Topic Alias {alias}, which no "
                         "PUBLISH on this connection has set yet", R.PROTOCOL_ERROR)

    def _sent_ack(self, event: Any) -> None:
        if event.properties is not EMPTY:
            self._check_problem_information(event, local=True)
        kind = type(event)
        if kind is PubAck or kind is PubComp or (kind is PubRec and event.reason_code >= 0x80):
            self.received_unacked.discard(event.packet_id)

    def _check_problem_information(self, event: Any, *, local: bool) -> None:
        props = event.properties
        if self.problem_information or not (props.reason_string or props.user_properties):
            return
        if (self.role is Role.SERVER) != local or type(event) not in _PROBLEM_INFO_PACKETS:
            return
        message = (f"{type(event).__name__.upper()} from the server carries a Reason String or "
                   "User Properties, but the client sent Request Problem Information 0 "
                   "(MQTT-3.1.2-29)")
        if local:
            raise _local(message, R.PROTOCOL_ERROR)
        raise protocol_error(message)

    def _subscribe_problem(self, event: Subscribe | Unsubscribe) -> tuple[str, ReasonCode] | None:
        filters = (event.topic_filters if type(event) is Unsubscribe
                   else [f for f, _ in event.subscriptions])  # type: ignore[union-attr]
        for topic_filter in filters:
            problem = topic_filter_problem(topic_filter, shared=True)
            if problem:
                return f"topic filter {topic_filter!r} {problem}", R.TOPIC_FILTER_INVALID
            if type(event) is Unsubscribe:
                continue
            if not self.wildcards and ("+" in topic_filter or "#" in topic_filter):
                return (f"wildcard filter {topic_filter!r}, but the server has Wildcard "
                        "Subscription Available 0", R.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED)
            if not self.shared and shared_subscription(topic_filter):
                return (f"shared subscription {topic_filter!r}, but the server has Shared "
                        "Subscription Available 0", R.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED)
        if (type(event) is Subscribe and event.properties.subscription_identifiers
                and not self.subscription_identifiers):
            return ("a Subscription Identifier, but the server has Subscription Identifier "
                    "Available 0", R.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED)
        return None

    def _sent_subscribe(self, event: Subscribe | Unsubscribe) -> None:
        problem = self._subscribe_problem(event)
        if problem:
            raise _local(f"{type(event).__name__.upper()} has {problem[0]}", problem[1])

    def _sent_disconnect(self, event: Disconnect) -> None:
        problem = self._disconnect_problem(event, sender=self.role)
        if problem:
            raise _local(problem, R.PROTOCOL_ERROR)

    def _disconnect_problem(self, event: Disconnect, sender: Role) -> str | None:
        allowed = (DISCONNECT_REASONS_FROM_CLIENT if sender is Role.CLIENT
                   else DISCONNECT_REASONS_FROM_SERVER)
        if event.reason_code not in allowed:
            return f"a {sender.value} may not send DISCONNECT reason code {event.reason_code:#04x}"
        expiry = event.properties.session_expiry_interval
        if expiry is not None and sender is Role.SERVER:
            return "a server must not send Session Expiry Interval in DISCONNECT (MQTT-3.14.2-2)"
        if expiry and not self.session_expires:
            return ("DISCONNECT sets a non-zero Session Expiry Interval, but the CONNECT's was "
                    "zero (§3.14.2.2.2)")
        return None

    def _auth_problem(self, event: Auth, sender: Role) -> str | None:
        method = self.authentication_method
        if method is None:
            return "AUTH, but the CONNECT had no Authentication Method (§4.12)"
        given = event.properties.authentication_method
        if given is not None and given != method:
            return f"AUTH Authentication Method {given!r} is not the CONNECT's {method!r}"
        if given is None and (event.reason_code or event.properties):
            return "AUTH without its Authentication Method (§3.15.2.2.2)"
        reason = event.reason_code
        if not self.connected:
            if reason != R.CONTINUE_AUTHENTICATION:
                return f"AUTH reason code {reason:#04x} before the CONNACK (only 0x18 is allowed)"
            return None
        if sender is Role.CLIENT:
            if reason == R.SUCCESS or (reason == R.CONTINUE_AUTHENTICATION
                                       and not self.reauthenticating):
                return f"AUTH reason code {reason:#04x} from a client that is not re-authenticating"
            if reason == R.REAUTHENTICATE and self.reauthenticating:
                return "AUTH 0x19 while a re-authentication is already under way"
        elif reason == R.REAUTHENTICATE or not self.reauthenticating:
            return f"AUTH reason code {reason:#04x} from the server outside a re-authentication"
        return None

    def _after_auth(self, event: Auth, sender: Role) -> None:
        if event.reason_code == R.REAUTHENTICATE:
            self.reauthenticating = True
        elif event.reason_code == R.SUCCESS and sender is Role.SERVER:
            self.reauthenticating = False

    def _sent_auth(self, event: Auth) -> None:
        problem = self._auth_problem(event, self.role)
        if problem:
            raise _local(problem, R.PROTOCOL_ERROR)
        self._check_problem_information(event, local=True)
        self._after_auth(event, self.role)

    # --- receiving ------------------------------------------------------------------------

    def received_publish(self, event: Publish) -> Publish:
        qos = event.qos
        if qos:
            if qos > self.maximum_qos:
                raise protocol_error(f"PUBLISH QoS {qos} exceeds our Maximum QoS "
                                     f"{self.maximum_qos}", R.QOS_NOT_SUPPORTED)
            unacked = self.received_unacked
            if event.packet_id not in unacked:
                if len(unacked) >= self.receive_maximum:
                    raise protocol_error(
                        f"received more unacknowledged QoS 1/2 PUBLISHes than our Receive "
                        f"Maximum {self.receive_maximum} (MQTT-3.3.4-7)",
                        R.RECEIVE_MAXIMUM_EXCEEDED)
                unacked.add(event.packet_id)  # type: ignore[arg-type]
        if event.retain and not self.retain_available:
            raise protocol_error("PUBLISH with retain, but we declared Retain Available 0",
                                 R.RETAIN_NOT_SUPPORTED)
        if event.properties is EMPTY:
            return event
        return self._received_publish_properties(event)

    def _received_publish_properties(self, event: Publish) -> Publish:
        props = event.properties
        if props.subscription_identifiers and self.role is Role.SERVER:
            raise protocol_error("a PUBLISH from a client carries a Subscription Identifier "
                                 "(MQTT-3.3.4-6)")
        alias = props.topic_alias
        if alias is None:
            return event
        if not 0 < alias <= self.topic_alias_maximum:
            raise protocol_error(
                f"PUBLISH Topic Alias {alias} is outside 1..{self.topic_alias_maximum}, our "
                "Topic Alias Maximum (MQTT-3.3.2-8, MQTT-3.3.2-9, MQTT-3.3.2-10)",
                R.TOPIC_ALIAS_INVALID)
        if event.topic:
            self.received_aliases[alias] = event.topic
            return event
        topic = self.received_aliases.get(alias)
        if topic is None:
            raise protocol_error(f"PUBLISH uses Topic Alias {alias}, which no PUBLISH on this "
                                 "connection has set (§3.3.2.3.4)")
        return trusted_publish(topic, event.payload, event.qos, event.retain, event.dup,
                               event.packet_id, props)

    def received_ack(self, event: Any) -> Any:
        if event.properties is not EMPTY:
            self._check_problem_information(event, local=False)
        kind = type(event)
        if kind is PubAck or kind is PubComp or (kind is PubRec and event.reason_code >= 0x80):
            self.sent_unacked.discard(event.packet_id)
        return event

    def received_subscribe(self, event: Subscribe | Unsubscribe) -> Subscribe | Unsubscribe:
        problem = self._subscribe_problem(event)
        if problem:
            raise protocol_error(f"{type(event).__name__.upper()} has {problem[0]}", problem[1])
        return event

    def received_disconnect(self, event: Disconnect) -> Disconnect:
        peer = Role.SERVER if self.role is Role.CLIENT else Role.CLIENT
        problem = self._disconnect_problem(event, sender=peer)
        if problem:
            raise protocol_error(problem)
        return event

    def received_auth(self, event: Auth) -> Auth:
        peer = Role.SERVER if self.role is Role.CLIENT else Role.CLIENT
        problem = self._auth_problem(event, peer)
        if problem:
            raise protocol_error(problem)
        self._check_problem_information(event, local=False)
        self._after_auth(event, peer)
        return event

    def received(self, event: Any) -> Any:
        """Check (and record) a received packet; returns the event (for an aliased PUBLISH:
        the one with the topic the alias stands for); raises RemoteProtocolError."""
        cls = type(event)
        if (not self.connected and self.authentication_method is not None
                and self.role is Role.SERVER and cls not in (Auth, Disconnect, Connect)):
            raise protocol_error(
                f"{cls.__name__.upper()} from a client using enhanced authentication "
                "before the CONNACK (MQTT-3.1.2-30)")
        if cls is Publish:
            qos = event.qos
            props = event.properties
            if ((props is EMPTY or (props.topic_alias is None
                                    and not props.subscription_identifiers))
                    and qos <= self.maximum_qos and (self.retain_available or not event.retain)):
                if qos:
                    unacked = self.received_unacked
                    if len(unacked) < self.receive_maximum or event.packet_id in unacked:
                        unacked.add(event.packet_id)
                        return event
                else:
                    return event
            return self.received_publish(event)
        if (cls is PubAck or cls is PubComp) and event.properties is EMPTY:
            self.sent_unacked.discard(event.packet_id)
            return event
        check = _RECEIVED.get(cls)
        return event if check is None else check(self, event)


_SENT: dict[type, Callable[[Limits5, Any], None]] = {
    Publish: Limits5._sent_publish,
    PubAck: Limits5._sent_ack,
    PubRec: Limits5._sent_ack,
    PubRel: Limits5._sent_ack,
    PubComp: Limits5._sent_ack,
    SubAck: Limits5._sent_ack,
    UnsubAck: Limits5._sent_ack,
    Subscribe: Limits5._sent_subscribe,
    Unsubscribe: Limits5._sent_subscribe,
    Disconnect: Limits5._sent_disconnect,
    Auth: Limits5._sent_auth,
}
_RECEIVED: dict[type, Callable[[Limits5, Any], Any]] = {
    Publish: Limits5.received_publish,
    PubAck: Limits5.received_ack,
    PubRec: Limits5.received_ack,
    PubRel: Limits5.received_ack,
    PubComp: Limits5.received_ack,
    SubAck: Limits5.received_ack,
    UnsubAck: Limits5.received_ack,
    Subscribe: Limits5.received_subscribe,
    Unsubscribe: Limits5.received_subscribe,
    Disconnect: Limits5.received_disconnect,
    Auth: Limits5.received_auth,
}

__all__ = ["Limits5", "RemoteProtocolError"]
