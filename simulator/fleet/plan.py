"""What a fleet run is asked to do: target, size, workload, stages, and how it is split.

Handsets are numbered ``0 .. handsets-1`` across the *whole* fleet, whatever the split, so
ids, topics, start times and push schedules are the same whether the fleet runs in one
process, in ``--workers W`` processes, as ``--shard i/N`` runs or as shards on a Dask
cluster:

- handsets form topic groups of ``fan_out`` (group ``g`` = handsets ``g·fan_out ..``); all
  members of a group subscribe to its topic and receive each of its pushes (with a shared
  group, ``$share/<name>/<topic>``: each push reaches one of them);
- shard ``s`` of ``n`` runs the groups with ``g % n == s``; inside a shard, worker ``w`` of
  ``W`` runs the groups with ``(g // n) % W == w`` (so a push and all its receivers are in
  one process, and the accounting of each push is local);
- handset ``i`` starts at :class:`~.stages.RampSchedule` ``.start_of(i)``; push ``k`` is due
  at :class:`~.stages.PushSchedule` ``.due(k)`` and goes to group ``k % groups``.
"""
from __future__ import annotations

import math

import attrs

from pushsdk.config import parse_broker_endpoint

from .stages import PushSchedule, RampSchedule, Stage, drain_seconds, run_seconds

__all__ = ["BrokerTarget", "FleetPlan", "ServerTarget", "Shard", "Workload", "parse_shard"]


@attrs.frozen
class ServerTarget:
    """The reference push server: register over HTTP, pushes through ``POST /v1/push``."""

    url: str
    app_key: str
    master_secret: str

    mode = "server"


@attrs.frozen
class BrokerTarget:
    """Any MQTT 3.1.1 or 5.0 broker: static client ids, one topic per group, an MQTT
    publisher; over TCP (``mqtt://``, ``mqtts://``) or WebSocket (``ws://``, ``wss://``)."""

    url: str
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    websocket_path: str | None = None  # MQTT over WebSocket at this path; None = plain TCP

    mode = "broker"

    @classmethod
    def from_url(cls, url: str, username: str | None = None,
                 password: str | None = None) -> BrokerTarget:
        """``mqtt://HOST[:1883]``, ``mqtts://HOST[:8883]``, ``ws://HOST[:80]/PATH`` or
        ``wss://HOST[:443]/PATH``; ``ValueError`` otherwise."""
        host, port, tls, path = parse_broker_endpoint(url)
        return cls(url=url, host=host, port=port, tls=tls, username=username,
                   password=password, websocket_path=path)


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
class Workload:
    """What the pushes look like and how handsets hold their sessions."""

    qos: int = 1  # broker mode: publisher QoS and handset subscription QoS
    payload_size: int = 0  # bytes of the push payload; 0 = just the tracer header
    fan_out: int = 1  # handsets per topic (each push reaches all of them)
    publishers: int = 0  # connections sending pushes in each worker; 0 = the mode's default
    session: str = "persistent"  # broker mode: "persistent" (clean session 0) or "clean"
    cleanup: bool = True  # remove the run's sessions / devices from the target at the end
    client_id_prefix: str = ""  # "" = pushsim-<run id>-
    topic_prefix: str = ""  # "" = pushsim/<run id>
    mqtt_version: str = "3.1.1"  # "3.1.1" or "5"; server mode also "auto" (the SDK's choice)
    mqtt_transport: str = "tcp"  # server mode: "tcp" or "ws" (the advertised mqtt.ws URL)
    session_expiry: int | None = None  # 5.0, persistent sessions: seconds; None = never
    message_expiry: int | None = None  # seconds a push may wait (5.0 property / server TTL)
    shared_group: str = ""  # 5.0: a group's handsets share $share/<name>/<topic>


@attrs.frozen(kw_only=True)
class FleetPlan:
    """One fleet run (this shard's part of it)."""

    target: ServerTarget | BrokerTarget
    handsets: int  # the whole fleet, all shards
    stages: tuple[Stage, ...]
    strategy: str | None = None  # None: the SDK's default for the mode
    workers: int = 1
    shard: Shard = Shard()
    source_ips: tuple[str, ...] = ()  # handset i binds source_ips[i % len]; () = the OS picks
    workload: Workload = Workload()
    ca_file: str | None = None
    connect_timeout: float = 10.0
    radio_model: str = "lte"
    seed: int | None = None
    run_id: str = ""

    @property
    def mode(self) -> str:
        return self.target.mode

    @property
    def duration(self) -> float:
        """Seconds of the stages before the drain."""
        return run_seconds(self.stages)

    @property
    def drain(self) -> float:
        return drain_seconds(self.stages)

    @property
    def mqtt_level(self) -> int:
        """The protocol level of the fleet's own MQTT connections (broker mode): 4 or 5."""
        return 5 if self.workload.mqtt_version == "5" else 4

    @property
    def client_id_prefix(self) -> str:
        return self.workload.client_id_prefix or f"pushsim-{self.run_id}-"

    @property
    def topic_prefix(self) -> str:
        return self.workload.topic_prefix or f"pushsim/{self.run_id}"

    def device_id(self, index: int) -> str:
        """Client id (broker mode) and device id (server mode) of handset ``index``."""
        return f"{self.client_id_prefix}{index}"

    def topic(self, group: int) -> str:
        """The topic of ``group`` (broker mode)."""
        return f"{self.topic_prefix}/{group}"

    def topic_filter(self, group: int) -> str:
        """What the members of ``group`` subscribe to: its topic, or with a shared group
        ``$share/<name>/<topic>`` (each push then reaches one member)."""
        topic = self.topic(group)
        shared = self.workload.shared_group
        return f"$share/{shared}/{topic}" if shared else topic

    @property
    def shared(self) -> bool:
        """Whether a group's members share one subscription (one delivery per push)."""
        return bool(self.workload.shared_group)

    # --- layout ---------------------------------------------------------------------------

    @property
    def groups(self) -> int:
        return -(-self.handsets // self.workload.fan_out)

    def group_of(self, index: int) -> int:
        return index // self.workload.fan_out

    def members(self, group: int) -> range:
        fan_out = self.workload.fan_out
        return range(group * fan_out, min(self.handsets, (group + 1) * fan_out))

    def worker_of_group(self, group: int) -> int:
        return (group // self.shard.count) % self.workers

    def shard_groups(self) -> range:
        return range(self.shard.index, self.groups, self.shard.count)

    def worker_groups(self, worker: int) -> range:
        """Groups run by ``worker`` of this shard (sorted)."""
        return self.shard_groups()[worker::self.workers]

    def worker_handsets(self, worker: int) -> list[int]:
        """Global indices run by ``worker`` of this shard (sorted)."""
        return [i for g in self.worker_groups(worker) for i in self.members(g)]

    def shard_handsets(self) -> list[int]:
        return [i for g in self.shard_groups() for i in self.members(g)]

    def owns(self, index: int) -> bool:
        return self.group_of(index) % self.shard.count == self.shard.index

    # --- schedules ------------------------------------------------------------------------

    def ramp_schedule(self) -> RampSchedule:
        return RampSchedule(self.stages)

    def push_schedule(self) -> PushSchedule:
        return PushSchedule(self.stages)

    def push_count(self) -> int:
        """Pushes due in the whole fleet."""
        return self.push_schedule().count

    def ramp_seconds(self) -> float:
        """When the last handset of the fleet is started."""
        return self.ramp_schedule().start_of(self.handsets - 1)

    def fingerprint(self) -> dict[str, object]:
        """What every shard of one run must agree on (checked when shards are merged)."""
        return {
            "mode": self.mode, "target": self.target.url, "handsets": self.handsets,
            "stages": [attrs.asdict(s) for s in self.stages], "strategy": self.strategy,
            "workload": attrs.asdict(self.workload), "radio_model": self.radio_model,
            "shards": self.shard.count, "run_id": self.run_id,
        }


def inf_to_none(value: float) -> float | None:
    return None if math.isinf(value) else value
