"""The push workload: numbered, time-stamped pushes and what each handset made of them.

Like emqtt-bench's payload headers, every push carries a *tracer* — its sequence number, the
group it is meant for and the wall-clock time it was **scheduled** for — so each receiving
handset measures end-to-end latency and the run counts losses and duplicates exactly:

    {"run": "3f2a9c1e", "seq": 17, "to": 17, "ts": 1767225600.123456, "pad": "xxxx"}

``ts`` is the scheduled time, not the moment the generator got round to sending it: an
overloaded generator shows up as latency instead of hiding it (coordinated omission, as
wrk2 measures). ``run`` tells this run's pushes from leftovers of an earlier one (a broker or
server keeps undelivered messages of persistent sessions), ``to`` is the group (the
handset itself without fan-out). ``pad`` fills the payload to ``--payload-size``.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeGuard

import attrs

__all__ = ["Ledger", "MemberLedger", "SharedLedger", "Tracer", "decode_tracer", "encode_tracer",
           "pushes_due", "pushes_for"]


@attrs.frozen
class Tracer:
    """The fleet's header in a push payload."""

    run: str
    seq: int
    to: int  # the group (= handset without fan-out) the push is meant for
    scheduled_at: float  # Unix seconds

    def as_data(self, payload_size: int = 0) -> dict[str, Any]:
        data: dict[str, Any] = {"run": self.run, "seq": self.seq, "to": self.to,
                                "ts": self.scheduled_at}
        if payload_size:
            bare = len(_dumps(data)) + len(',"pad":""')
            if payload_size > bare:
                data["pad"] = "x" * (payload_size - bare)
        return data


def _dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def encode_tracer(tracer: Tracer, payload_size: int = 0) -> bytes:
    """Compact JSON bytes (broker mode payload), exactly ``payload_size`` bytes when that is
    more than the header itself (a ``pad`` field, and trailing JSON whitespace for a gap too
    small for one)."""
    data = _dumps(tracer.as_data(payload_size))
    return data + b" " * (payload_size - len(data)) if payload_size > len(data) else data


def decode_tracer(data: Any) -> Tracer | None:
    """A tracer from a JSON payload (bytes) or an already parsed object; ``None`` if it is
    not one of ours."""
    if isinstance(data, (bytes, bytearray, str)):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return None
    if not isinstance(data, Mapping):
        return None
    run, seq, to, ts = data.get("run"), data.get("seq"), data.get("to"), data.get("ts")
    if not (isinstance(run, str) and _is_int(seq) and _is_int(to)
            and isinstance(ts, (int, float)) and not isinstance(ts, bool)):
        return None
    return Tracer(run, seq, to, float(ts))


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def pushes_for(groups: Sequence[int], group_count: int, total: int) -> Iterator[int]:
    """Sequence numbers of the pushes due to ``groups`` (sorted), in order.

    Push ``k`` goes to group ``k % group_count``; ``total`` pushes are due fleet-wide.
    """
    if not groups:
        return
    cycle = 0
    while True:
        base = cycle * group_count
        for group in groups:
            seq = base + group
            if seq >= total:
                return
            yield seq
        cycle += 1


def pushes_due(groups: Sequence[int], group_count: int, total: int) -> int:
    """How many of the ``total`` pushes go to ``groups`` (``len(list(pushes_for(...)))``)."""
    return sum(-(-(total - group) // group_count) for group in groups if group < total)


class Ledger:
    """One handset's pushes: those it was expected to get (sent to its group while it was
    subscribed, whatever the target answered) and those that reached the app.

    Push ``seq`` of a group is its ``seq // groups``-th; both sets are bitsets over that
    number (a few bytes per handset instead of two Python sets). ``delivered`` counts only
    pushes both expected and received, so it can never exceed ``expected``.
    """

    __slots__ = ("_expected", "_groups", "_received", "duplicates", "misrouted", "stale")

    def __init__(self, groups: int) -> None:
        self._groups = groups
        self._expected = 0
        self._received = 0
        self.duplicates = 0  # the app saw the same push again
        self.stale = 0  # pushes of another run (left over in the broker or server)
        self.misrouted = 0  # pushes of this run meant for another group

    def on_expected(self, seq: int) -> bool:
        """``seq`` went out to this handset; True if it had already arrived."""
        bit = 1 << (seq // self._groups)
        self._expected |= bit
        return bool(self._received & bit)

    def on_received(self, tracer: Tracer | None, run: str, group: int) -> bool:
        """A push reached the app; True when it is this handset's and new (to be timed)."""
        if tracer is None or tracer.run != run:
            self.stale += 1
        elif tracer.to != group or tracer.seq % self._groups != group:
            self.misrouted += 1
        else:
            bit = 1 << (tracer.seq // self._groups)
            if self._received & bit:
                self.duplicates += 1
            else:
                self._received |= bit
                return True
        return False

    def was_expected(self, seq: int) -> bool:
        return bool(self._expected & (1 << (seq // self._groups)))

    @property
    def expected(self) -> int:
        return self._expected.bit_count()

    @property
    def delivered(self) -> int:
        return (self._expected & self._received).bit_count()

    @property
    def lost(self) -> int:
        """Expected pushes that never reached the app."""
        return (self._expected & ~self._received).bit_count()

    @property
    def unexpected(self) -> int:
        """Pushes of this run that arrived although they were not sent to this handset while
        it was subscribed (e.g. queued for a clean session that had just gone)."""
        return (self._received & ~self._expected).bit_count()


class SharedLedger:
    """The pushes of one shared-subscription group (``$share/<name>/<topic>``): the broker
    hands each push to *one* member, so a push is expected once per group (not once per
    member), and a second arrival of it — at any member — is a duplicate.

    Bitsets as in :class:`Ledger`: ``expected_bits`` (sent while a member was subscribed)
    and ``_received`` (arrived at some member)."""

    __slots__ = ("_received", "expected_bits", "groups")

    def __init__(self, groups: int) -> None:
        self.groups = groups
        self.expected_bits = 0
        self._received = 0

    def bit(self, seq: int) -> int:
        return 1 << (seq // self.groups)

    def on_expected(self, seq: int) -> bool:
        """``seq`` went out to the group; True if a member already has it."""
        bit = self.bit(seq)
        self.expected_bits |= bit
        return bool(self._received & bit)

    def on_received(self, bit: int) -> bool:
        """A member got the push of ``bit``; True if it is the group's first copy."""
        if self._received & bit:
            return False
        self._received |= bit
        return True

    @property
    def lost(self) -> int:
        """Expected pushes no member got."""
        return (self.expected_bits & ~self._received).bit_count()


class MemberLedger:
    """One member's view of its group's :class:`SharedLedger`, with :class:`Ledger`'s
    interface so that a handset and the observer need not know which one they hold.

    A member's ``delivered`` are the expected pushes it was the first to get (its share;
    summed over the members, the group's deliveries), its ``duplicates`` the copies it got
    of pushes the group already had. The group's lost pushes are counted at one member, the
    ``lead`` (the group's first), so that the sums over the rows are the group's figures:
    ``expected = delivered + lost`` per member and per group."""

    __slots__ = ("_received", "duplicates", "lead", "misrouted", "shared", "stale")

    def __init__(self, shared: SharedLedger, *, lead: bool) -> None:
        self.shared = shared
        self.lead = lead
        self._received = 0  # pushes this member got first
        self.duplicates = 0
        self.stale = 0
        self.misrouted = 0

    def on_expected(self, seq: int) -> bool:
        return self.shared.on_expected(seq)

    def on_received(self, tracer: Tracer | None, run: str, group: int) -> bool:
        """As :meth:`Ledger.on_received`; True when it is the group's first copy."""
        groups = self.shared.groups
        if tracer is None or tracer.run != run:
            self.stale += 1
        elif tracer.to != group or tracer.seq % groups != group:
            self.misrouted += 1
        elif self.shared.on_received(bit := self.shared.bit(tracer.seq)):
            self._received |= bit
            return True
        else:
            self.duplicates += 1
        return False

    def was_expected(self, seq: int) -> bool:
        return bool(self.shared.expected_bits & self.shared.bit(seq))

    @property
    def delivered(self) -> int:
        return (self.shared.expected_bits & self._received).bit_count()

    @property
    def lost(self) -> int:
        return self.shared.lost if self.lead else 0

    @property
    def expected(self) -> int:
        return self.delivered + self.lost

    @property
    def unexpected(self) -> int:
        return (self._received & ~self.shared.expected_bits).bit_count()
