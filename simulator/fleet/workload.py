"""The push workload: numbered, time-stamped pushes and what each handset made of them.

Like emqtt-bench's payload headers, every push carries its sequence number and the wall-clock
time it was sent, so the receiving handset measures end-to-end latency and the run counts
losses and duplicates exactly:

    {"run": "3f2a9c1e", "seq": 17, "h": 17, "ts": 1767225600.123456}

``run`` tells this run's pushes from leftovers of an earlier one (a broker or server keeps
undelivered messages of persistent sessions across runs), ``h`` is the handset the push was
meant for. Sender and receiver of a push run in the same process, so ``ts`` and the receive
time come from the same clock.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs

__all__ = ["Ledger", "Tracer", "decode_tracer", "encode_tracer", "pushes_due", "pushes_for"]


@attrs.frozen
class Tracer:
    """The fleet's header in a push payload."""

    run: str
    seq: int
    handset: int
    sent_at: float  # Unix seconds

    def as_data(self) -> dict[str, Any]:
        return {"run": self.run, "seq": self.seq, "h": self.handset, "ts": self.sent_at}


def encode_tracer(tracer: Tracer) -> bytes:
    """Compact JSON bytes (broker mode payload)."""
    return json.dumps(tracer.as_data(), separators=(",", ":")).encode()


def decode_tracer(data: Any) -> Tracer | None:
    """A tracer from a JSON payload (bytes) or an already parsed object; ``None`` if it is not
    one of ours."""
    if isinstance(data, (bytes, bytearray, str)):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return None
    if not isinstance(data, Mapping):
        return None
    run, seq, handset, sent_at = data.get("run"), data.get("seq"), data.get("h"), data.get("ts")
    if not (isinstance(run, str) and _is_int(seq) and _is_int(handset)
            and isinstance(sent_at, (int, float)) and not isinstance(sent_at, bool)):
        return None
    return Tracer(run, seq, handset, float(sent_at))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def pushes_for(handsets: Sequence[int], fleet_size: int, total: int) -> Iterator[int]:
    """Sequence numbers of the pushes due to ``handsets`` (sorted global indices), in order.

    Push ``k`` goes to handset ``k % fleet_size``; ``total`` pushes are due fleet-wide.
    """
    if not handsets:
        return
    cycle = 0
    while True:
        base = cycle * fleet_size
        for handset in handsets:
            seq = base + handset
            if seq >= total:
                return
            yield seq
        cycle += 1


def pushes_due(handsets: Sequence[int], fleet_size: int, total: int) -> int:
    """How many of the ``total`` pushes go to ``handsets`` (``len(list(pushes_for(...)))``)."""
    return sum(-(-(total - handset) // fleet_size) for handset in handsets if handset < total)


class Ledger:
    """One handset's pushes: accepted by the server or broker, received by the app."""

    __slots__ = ("accepted", "received", "duplicates", "latencies", "stale", "misrouted")

    def __init__(self) -> None:
        self.accepted: set[int] = set()
        self.received: set[int] = set()
        self.duplicates = 0  # the app saw the same sequence number again
        self.latencies: list[float] = []  # seconds, first receipt of each push
        self.stale = 0  # pushes of another run (left over in the broker or server)
        self.misrouted = 0  # pushes of this run meant for another handset

    # Both return 1 when the push is now accepted *and* received (either order: the app may
    # see a push before the server's answer to the sender arrives), so a caller can keep a
    # running count of settled pushes without scanning the sets.

    def on_accepted(self, seq: int) -> int:
        self.accepted.add(seq)
        return 1 if seq in self.received else 0

    def on_received(self, tracer: Tracer | None, run: str, handset: int, now: float) -> int:
        if tracer is None or tracer.run != run:
            self.stale += 1
        elif tracer.handset != handset:
            self.misrouted += 1
        elif tracer.seq in self.received:
            self.duplicates += 1
        else:
            self.received.add(tracer.seq)
            self.latencies.append(max(0.0, now - tracer.sent_at))
            return 1 if tracer.seq in self.accepted else 0
        return 0

    @property
    def delivered(self) -> int:
        return len(self.received)

    @property
    def lost(self) -> int:
        """Accepted pushes that never reached the app."""
        return len(self.accepted - self.received)
