"""Which devices are connected to this server process: the session registry.

The MQTT gateway enters a device's session here when its CONNECT is accepted and removes it
when the connection ends; the server asks it who is online (ttl-0 pushes), wakes sessions
whose device got a push, and revokes sessions whose tokens were revoked. A cluster worker
(``cluster.py``) injects a subclass that also tells the other workers.

Probe connections (client id ``<registration_id>/probe``) are entered too, at most
``probe_limit`` at a time per device, so that one device cannot hold many.
"""
from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Protocol

__all__ = ["Revocable", "Session", "SessionRegistry"]


class Revocable(Protocol):
    """A connection that can be told to end because its device's tokens were revoked."""

    token_hash: bytes

    def revoke(self, after: float) -> None:
        """End the connection ``after`` seconds from now (0: at once)."""


class Session(Revocable, Protocol):
    """What the registry needs of a connected device's session (``MqttSession``)."""

    registration_id: str
    inflight: dict[int, int]

    def wake(self) -> None: ...
    def take_over(self) -> None: ...
    def superseded(self) -> None: ...


class SessionRegistry:
    """The sessions and probe connections of this process, by registration id."""

    def __init__(self, probe_limit: int | None = None) -> None:
        self.probe_limit = probe_limit
        self._sessions: dict[str, Session] = {}
        self._probes: dict[str, list[Revocable]] = {}

    # --- sessions ------------------------------------------------------------------------

    def get(self, registration_id: str) -> Session | None:
        return self._sessions.get(registration_id)

    def __contains__(self, registration_id: object) -> bool:
        return registration_id in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def attach(self, session: Session) -> None:
        """``session`` is its device's connection from now on (an earlier one must have
        been taken over already)."""
        self._sessions[session.registration_id] = session

    def detach(self, session: Session) -> bool:
        """Forget ``session`` if it is still its device's connection; whether it was."""
        rid = session.registration_id
        if self._sessions.get(rid) is session:
            del self._sessions[rid]
            return True
        return False

    def online(self) -> Collection[str]:
        """Registration ids of devices connected now (to any process of a cluster)."""
        return self._sessions.keys()

    def inflight(self) -> int:
        """Messages sent and not acknowledged yet, over every session of this process."""
        return sum(len(session.inflight) for session in self._sessions.values())

    def wake(self, registration_ids: Sequence[str]) -> None:
        """Pushes for these devices were committed: wake the ones connected here."""
        sessions = self._sessions
        for rid in registration_ids:
            session = sessions.get(rid)
            if session is not None:
                session.wake()

    def revoke(self, registration_id: str, after: float, keep: bytes | None = None) -> int:
        """The device's tokens (all but the one hashing to ``keep``) stop working ``after``
        seconds from now: its connections using them end then. How many were told."""
        told = 0
        for connection in self._connections_of(registration_id):
            if keep is None or connection.token_hash != keep:
                connection.revoke(after)
                told += 1
        return told

    def _connections_of(self, registration_id: str) -> Iterable[Revocable]:
        session = self._sessions.get(registration_id)
        if session is not None:
            yield session
        yield from list(self._probes.get(registration_id, ()))

    # --- probe connections -------------------------------------------------------------------

    def add_probe(self, registration_id: str, probe: Revocable) -> bool:
        """Enter a probe connection; False (not entered) if the device holds the most
        allowed already."""
        probes = self._probes.setdefault(registration_id, [])
        if self.probe_limit is not None and len(probes) >= self.probe_limit:
            if not probes:
                del self._probes[registration_id]
            return False
        probes.append(probe)
        return True

    def remove_probe(self, registration_id: str, probe: Revocable) -> None:
        probes = self._probes.get(registration_id)
        if probes is not None and probe in probes:
            probes.remove(probe)
            if not probes:
                del self._probes[registration_id]

    def probes(self, registration_id: str) -> int:
        return len(self._probes.get(registration_id, ()))
