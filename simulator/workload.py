"""The provider's push workload: what the app's backend sends, and when. Pure and seeded.

Three streams, each a Poisson process over the run:

- *direct* pushes, ``direct_per_handset_day`` per handset per day, each to that one device,
  addressed by ``registration_id`` or (a share ``alias_share``) by its alias ``user-<index>``;
- *tag* pushes, ``tag_per_day`` per day for the fleet, each to one cohort tag
  ``cohort-<k>`` (a handset's cohort is ``index % cohorts``);
- *broadcasts*, ``broadcast_per_day`` per day, ``audience: "all"``.

Every push draws a TTL, a priority, an optional collapse key, notification-or-message and a
payload size. Each direct stream is seeded per handset (``f"{seed}:push:{index}"``) and the
fleet streams per kind, so a shard that schedules only its own handsets gets exactly the
pushes, times and attributes the whole fleet would give them.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Literal, Protocol

import attrs

AudienceKind = Literal["registration_id", "alias", "tag", "all"]
Priority = Literal["high", "normal"]
PayloadKind = Literal["notification", "message"]

DAY = 86400.0
#: Largest payload the workload generates; keeps every body under the server's 4096-byte limit.
MAX_PAYLOAD_BYTES = 3000
#: The largest push TTL the reference server accepts (``ServerSettings.max_ttl``, 28 days:
#: FCM's maximum); a scenario asking for more is refused when it is read.
MAX_TTL_S = 28 * 86400
COLLAPSE_KEYS = ("ck-0", "ck-1", "ck-2")


class Addressable(Protocol):
    """What the scheduler needs from a handset spec (read-only, so frozen specs qualify)."""

    @property
    def index(self) -> int: ...

    @property
    def alias(self) -> str: ...

    @property
    def tags(self) -> tuple[str, ...]: ...


def alias_for(index: int) -> str:
    return f"user-{index}"


def cohort_tag(index: int, cohorts: int) -> str:
    return f"cohort-{index % cohorts}"


@attrs.frozen
class PushPlan:
    """One push the provider sends at ``t`` (virtual seconds since the start of the run).

    ``targets`` are the handset indices it is meant to reach (all matching handsets among
    the specs scheduled). ``body()`` is the JSON for ``POST /v1/push`` (interfaces §2); the
    ``plan_id`` travels in the notification extras / message data so a delivery can be
    matched to its plan.
    """

    t: float
    plan_id: str
    audience_kind: AudienceKind
    audience_value: str | None
    targets: tuple[int, ...]
    ttl: int
    priority: Priority
    collapse_key: str | None
    kind: PayloadKind
    payload_bytes: int

    def audience(
        self, registration_ids: Mapping[int, str] | Callable[[int], str] | None = None
    ) -> str | dict:
        """The ``audience`` field; direct pushes need the targets' registration ids."""
        if self.audience_kind == "all":
            return "all"
        if self.audience_kind == "registration_id":
            if registration_ids is None:
                raise ValueError(f"push {self.plan_id} needs the registration id of its target")
            lookup = (registration_ids if callable(registration_ids)
                      else registration_ids.__getitem__)
            return {"registration_id": [lookup(i) for i in self.targets]}
        return {self.audience_kind: [self.audience_value]}

    def body(
        self, registration_ids: Mapping[int, str] | Callable[[int], str] | None = None
    ) -> dict:
        """The request body for ``POST /v1/push``."""
        options: dict = {"ttl": self.ttl, "priority": self.priority}
        if self.collapse_key is not None:
            options["collapse_key"] = self.collapse_key
        filler = _filler(self.payload_bytes)
        body: dict = {"audience": self.audience(registration_ids), "options": options}
        if self.kind == "notification":
            body["notification"] = {
                "title": f"Push {self.plan_id}",
                "body": filler,
                "extras": {"plan_id": self.plan_id},
            }
        else:
            body["message"] = {"data": {"plan_id": self.plan_id, "blob": filler}}
        return body


def _filler(n: int) -> str:
    text = "The quick brown fox jumps over the lazy dog. "
    return (text * (n // len(text) + 1))[:n]


@attrs.frozen
class Workload:
    """Push rates and the mix of push attributes. Defaults: docs/scenarios.md."""

    direct_per_handset_day: float = 10.0
    alias_share: float = 0.3
    tag_per_day: float = 6.0
    broadcast_per_day: float = 1.0
    cohorts: int = 10
    high_priority_share: float = 0.3
    collapse_share: float = 0.1
    notification_share: float = 0.8
    ttl_choices: tuple[tuple[int, float], ...] = ((86400, 0.85), (3600, 0.10), (0, 0.05))
    payload_bytes: tuple[int, int] = (64, 1024)

    def __attrs_post_init__(self) -> None:
        for name in ("direct_per_handset_day", "tag_per_day", "broadcast_per_day"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"workload.{name} must be a finite number ≥ 0, got {value!r}")
        for name in ("alias_share", "high_priority_share", "collapse_share", "notification_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"workload.{name} must be between 0 and 1")
        if self.cohorts < 1:
            raise ValueError("workload.cohorts must be ≥ 1")
        if not self.ttl_choices or any(v < 0 or w < 0 for v, w in self.ttl_choices):
            raise ValueError("workload.ttl_s needs values ≥ 0 with weights ≥ 0")
        if any(v > MAX_TTL_S for v, _ in self.ttl_choices):
            raise ValueError(f"workload.ttl_s must not exceed {MAX_TTL_S} s (28 days: the "
                             "server refuses longer TTLs)")
        if sum(w for _, w in self.ttl_choices) <= 0:
            raise ValueError("workload.ttl_s weights must not all be 0")
        low, high = self.payload_bytes
        if not 1 <= low <= high <= MAX_PAYLOAD_BYTES:
            raise ValueError(f"workload.payload_bytes must lie within 1..{MAX_PAYLOAD_BYTES}")

    def tags_for(self, index: int) -> tuple[str, ...]:
        """The workload's tags for handset ``index`` (its cohort)."""
        return (cohort_tag(index, self.cohorts),)

    def schedule(
        self, specs: Iterable[Addressable], hours: float, seed: int | str
    ) -> list[PushPlan]:
        """Every push for ``specs`` during ``hours``, sorted by time (then plan id)."""
        specs = sorted(specs, key=lambda s: s.index)
        duration = hours * 3600.0
        plans: list[PushPlan] = []
        for spec in specs:
            rng = random.Random(f"{seed}:push:{spec.index}")
            for k, t in enumerate(_poisson(rng, self.direct_per_handset_day / DAY, duration)):
                by_alias = rng.random() < self.alias_share
                plans.append(self._plan(
                    rng, t, f"d{spec.index}.{k}",
                    "alias" if by_alias else "registration_id",
                    spec.alias if by_alias else None,
                    (spec.index,),
                ))
        by_tag: dict[str, list[int]] = {}
        for spec in specs:
            for tag in spec.tags:
                by_tag.setdefault(tag, []).append(spec.index)
        rng = random.Random(f"{seed}:push:tag")
        for k, t in enumerate(_poisson(rng, self.tag_per_day / DAY, duration)):
            tag = f"cohort-{rng.randrange(self.cohorts)}"
            plan = self._plan(rng, t, f"t{k}", "tag", tag, tuple(by_tag.get(tag, ())))
            if plan.targets:
                plans.append(plan)
        rng = random.Random(f"{seed}:push:all")
        everyone = tuple(spec.index for spec in specs)
        for k, t in enumerate(_poisson(rng, self.broadcast_per_day / DAY, duration)):
            plan = self._plan(rng, t, f"b{k}", "all", None, everyone)
            if plan.targets:
                plans.append(plan)
        plans.sort(key=lambda p: (p.t, p.plan_id))
        return plans

    def _plan(
        self, rng: random.Random, t: float, plan_id: str, audience_kind: AudienceKind,
        audience_value: str | None, targets: tuple[int, ...],
    ) -> PushPlan:
        # Always the same draws in the same order, so streams never shift between shards.
        values, weights = zip(*self.ttl_choices)
        ttl = rng.choices(values, weights)[0]
        high = rng.random() < self.high_priority_share
        collapse = rng.random() < self.collapse_share
        collapse_key = COLLAPSE_KEYS[rng.randrange(len(COLLAPSE_KEYS))]
        notification = rng.random() < self.notification_share
        payload = rng.randint(*self.payload_bytes)
        return PushPlan(
            t=t,
            plan_id=plan_id,
            audience_kind=audience_kind,
            audience_value=audience_value,
            targets=targets,
            ttl=int(ttl),
            priority="high" if high else "normal",
            collapse_key=collapse_key if collapse else None,
            kind="notification" if notification else "message",
            payload_bytes=payload,
        )


def _poisson(rng: random.Random, rate: float, duration: float) -> list[float]:
    """Arrival times of a Poisson process with ``rate`` per second over ``[0, duration)``."""
    times: list[float] = []
    if rate <= 0:
        return times
    t = rng.expovariate(rate)
    while t < duration:
        times.append(t)
        t += rng.expovariate(rate)
    return times
