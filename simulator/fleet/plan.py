"""What a fleet run is asked to do: target, size, pacing, sharding.

Handsets are numbered ``0 .. handsets-1`` across the *whole* fleet, whatever the sharding, so
ids (``pushsim-<i>``), start times and push schedules are the same whether the fleet runs in
one process, in ``--workers W`` processes or as ``--shard i/N`` runs on several machines:

- shard ``s`` of ``n`` runs the handsets with ``index % n == s``;
- inside a shard, worker ``w`` of ``W`` runs the shard's ``j``-th handset when ``j % W == w``;
- handset ``i`` starts at ``i / ramp`` seconds after the run starts;
- push ``k`` is due at ``k / push_rate`` seconds and goes to handset ``k % handsets``; the
  process running that handset sends it.
"""
from __future__ import annotations

import math

import attrs

from pushsdk.config import parse_broker_url

__all__ = ["BrokerTarget", "FleetPlan", "ServerTarget", "Shard", "parse_shard"]


@attrs.frozen
class ServerTarget:
    """The reference push server: register over HTTP, pushes through ``POST /v1/push``."""

    url: str
    app_key: str
    master_secret: str

    mode = "server"


@attrs.frozen
class BrokerTarget:
    """Any MQTT 3.1.1 broker: static client ids, topics ``pushsim/<i>``, an MQTT publisher."""

    url: str
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    mode = "broker"

    @classmethod
    def from_url(cls, url: str, username: str | None = None,
                 password: str | None = None) -> BrokerTarget:
        """``mqtt://HOST[:1883]`` or ``mqtts://HOST[:8883]``; ``ValueError`` otherwise."""
        host, port, tls = parse_broker_url(url)
        return cls(url=url, host=host, port=port, tls=tls, username=username, password=password)


@attrs.frozen
class Shard:
    """``index`` of ``count`` (``--shard 1/4``); ``Shard(0, 1)`` is the whole fleet."""

    index: int = 0
    count: int = 1

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard must be i/N with 0 <= i < N, got {self}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, handset: int) -> bool:
        return handset % self.count == self.index

    def handsets(self, fleet_size: int) -> range:
        return range(self.index, fleet_size, self.count)


def parse_shard(text: str) -> Shard:
    """``"i/N"`` → :class:`Shard`; ``ValueError`` with a readable message otherwise."""
    index, slash, count = text.partition("/")
    try:
        if not slash:
            raise ValueError
        return Shard(int(index), int(count))
    except ValueError:
        raise ValueError(f"--shard must be i/N with 0 <= i < N (e.g. 0/4), got {text!r}") from None


@attrs.frozen(kw_only=True)
class FleetPlan:
    """One fleet run (this shard's part of it)."""

    target: ServerTarget | BrokerTarget
    handsets: int  # the whole fleet, all shards
    duration: float  # seconds from the start; handsets ramp up and pushes are sent inside it
    strategy: str | None = None  # None: the SDK's default for the mode
    workers: int = 1
    shard: Shard = Shard()
    source_ips: tuple[str, ...] = ()  # handset i binds source_ips[i % len]; () = the OS picks
    push_rate: float = 10.0  # pushes per second, whole fleet; 0 = none
    ramp: float = 1000.0  # handset starts per second, whole fleet; inf = all at once
    drain: float = 10.0  # after duration, wait at most this long for pushes still in flight
    ca_file: str | None = None
    connect_timeout: float = 10.0
    radio_model: str = "lte"
    seed: int | None = None
    run_id: str = ""

    @property
    def mode(self) -> str:
        return self.target.mode

    def shard_handsets(self) -> range:
        return self.shard.handsets(self.handsets)

    def worker_handsets(self, worker: int) -> range:
        """Global indices run by ``worker`` of this shard."""
        own = self.shard_handsets()
        return own[worker::self.workers]

    def worker_of(self, handset: int) -> int:
        return (handset // self.shard.count) % self.workers

    def ramp_seconds(self) -> float:
        """When the last handset of the fleet is started."""
        if math.isinf(self.ramp):
            return 0.0
        return (self.handsets - 1) / self.ramp

    def push_count(self) -> int:
        """Pushes due in the whole fleet: ``k / push_rate < duration``."""
        if self.push_rate <= 0:
            return 0
        return math.ceil(self.push_rate * self.duration - 1e-9)
