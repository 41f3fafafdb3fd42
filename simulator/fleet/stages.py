"""Stages of a fleet run and the two schedules they make: when each handset starts, and when
each push is due.

A run is a list of stages, like HiveMQ Swarm's scenarios or k6's ``stages``:

- ``ramp``: start handsets, linearly, up to ``handsets`` started by the stage's end;
- ``hold``: keep what is connected;
- ``storm``: at its start, cut the link of a ``fraction`` of the handsets (the reconnect
  storm: they all reconnect with their backoff);
- ``drain`` (last only): no pushes; ends as soon as every accepted push has arrived.

Every stage but ``drain`` may push (``push_rate`` per second, fleet-wide). From the command
line, ``--duration D --ramp R --push-rate P --drain T`` is ``ramp`` (N/R s) + ``hold`` (the
rest of D), both at P/s, then ``drain`` (T s).

Both schedules depend only on the stages and the fleet size, never on how the fleet is split
over shards and workers: handset ``i`` starts, and push ``k`` is due, at the same moment
(seconds since the common start) in every layout.
"""
from __future__ import annotations

import bisect
import math
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

__all__ = ["KINDS", "PushSchedule", "RampSchedule", "Stage", "StageError", "cli_stages",
           "load_scenario", "storm_members"]

KINDS = ("ramp", "hold", "storm", "drain")
STORM_HOWS = ("drop", "network-change")


class StageError(ValueError):
    """A stage list or scenario file that cannot run; the message says why (one line)."""


@attrs.frozen(kw_only=True)
class Stage:
    kind: str
    duration: float
    push_rate: float = 0.0
    handsets: int | None = None  # ramp: started by the end of the stage
    fraction: float = 0.0  # storm: share of the handsets whose link is cut
    how: str = "drop"  # storm: "drop" (the link breaks) or "network-change" (the SDK is told)
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or self.kind


def cli_stages(handsets: int, duration: float, ramp: float, push_rate: float,
               drain: float) -> tuple[Stage, ...]:
    """The stages of ``--duration --ramp --push-rate --drain`` (``ramp`` 0 or inf: all at
    once)."""
    ramp_s = 0.0 if not ramp or math.isinf(ramp) else handsets / ramp
    if ramp_s > duration:
        raise StageError(f"{handsets} handsets at --ramp {ramp:g}/s take {ramp_s:.1f} s to "
                         f"start, more than --duration {duration:g}; raise --ramp or --duration")
    stages = [Stage(kind="ramp", duration=ramp_s, push_rate=push_rate, handsets=handsets)]
    if duration > ramp_s:
        stages.append(Stage(kind="hold", duration=duration - ramp_s, push_rate=push_rate))
    stages.append(Stage(kind="drain", duration=drain))
    return tuple(stages)


#: Bounds on a stage: far beyond any real run (Mosquitto takes ~10^5 pushes/s on a core),
#: low enough that the counts and per-second series stay meaningful numbers.
MAX_STAGE_S = 365 * 86400
MAX_PUSH_RATE = 1_000_000


def check_stages(stages: Sequence[Stage], handsets: int) -> None:
    """:class:`StageError` unless the stages can run with ``handsets`` handsets."""
    if not stages:
        raise StageError("a scenario needs at least one stage")
    started = 0
    for number, stage in enumerate(stages, 1):
        where = f"stage {number} ({stage.label})"
        if stage.kind not in KINDS:
            raise StageError(f"{where}: kind must be one of {', '.join(KINDS)}")
        if not 0 <= stage.duration <= MAX_STAGE_S:
            raise StageError(f"{where}: duration must be a number of seconds from 0 to "
                             f"{MAX_STAGE_S:,} (a year)")
        if not 0 <= stage.push_rate <= MAX_PUSH_RATE:
            raise StageError(f"{where}: push_rate must be a number from 0 to "
                             f"{MAX_PUSH_RATE:,} per second")
        if stage.kind == "drain" and (number != len(stages) or stage.push_rate):
            raise StageError(f"{where}: drain must be the last stage and has no push_rate")
        if stage.kind == "ramp":
            if stage.handsets is None or not started < stage.handsets <= handsets:
                raise StageError(f"{where}: handsets must be more than the {started} started "
                                 f"before and at most the fleet's {handsets}")
            started = stage.handsets
        if stage.kind == "storm":
            if not 0 < stage.fraction <= 1:
                raise StageError(f"{where}: fraction must be in (0, 1]")
            if stage.how not in STORM_HOWS:
                raise StageError(f"{where}: how must be one of {', '.join(STORM_HOWS)}")
    if started != handsets:
        raise StageError(f"the ramp stages start {started} handsets, the fleet has {handsets}")


def run_seconds(stages: Sequence[Stage]) -> float:
    """Length of the stages before ``drain``."""
    return sum(s.duration for s in stages if s.kind != "drain")


def drain_seconds(stages: Sequence[Stage]) -> float:
    return sum(s.duration for s in stages if s.kind == "drain")


def stage_starts(stages: Sequence[Stage]) -> list[float]:
    """When each stage begins (seconds since the start)."""
    starts, t = [], 0.0
    for stage in stages:
        starts.append(t)
        t += stage.duration
    return starts


class RampSchedule:
    """When handset ``i`` starts: linear within the ramp stage that takes it past ``i``."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        #: (first index, end index, start time, seconds)
        self._segments: list[tuple[int, int, float, float]] = []
        started = 0
        for stage, start in zip(stages, stage_starts(stages)):
            if stage.kind == "ramp" and stage.handsets is not None:
                self._segments.append((started, stage.handsets, start, stage.duration))
                started = stage.handsets
        self._firsts = [segment[0] for segment in self._segments]

    def start_of(self, index: int) -> float:
        first, end, start, seconds = self._segments[bisect.bisect_right(self._firsts, index) - 1]
        return start + seconds * (index - first) / (end - first)

    def rate_at(self, index: int) -> float:
        """Starts per second asked for around handset ``index`` (inf: all at once)."""
        first, end, _, seconds = self._segments[bisect.bisect_right(self._firsts, index) - 1]
        return (end - first) / seconds if seconds else math.inf


class PushSchedule:
    """Push ``k`` (from 0) is due when the cumulative asked pushes reach ``k``."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        #: (pushes due before the segment, start time, rate)
        self._segments: list[tuple[float, float, float]] = []
        total = 0.0
        for stage, start in zip(stages, stage_starts(stages)):
            if stage.push_rate > 0 and stage.duration > 0:
                self._segments.append((total, start, stage.push_rate))
                total += stage.push_rate * stage.duration
        self._bases = [segment[0] for segment in self._segments]
        #: Pushes due fleet-wide: every k with due(k) inside a pushing stage.
        self.count = math.ceil(total - 1e-9) if total > 0 else 0

    def due(self, k: int) -> float:
        base, start, rate = self._segments[bisect.bisect_right(self._bases, k) - 1]
        return start + (k - base) / rate


def storm_members(index: int, fraction: float) -> bool:
    """Whether handset ``index`` is in a storm of ``fraction`` (a fixed hash of the index, so
    the same handsets in every layout)."""
    return ((index * 2654435761) & 0xFFFFFFFF) / 2**32 < fraction


# --- scenario files -----------------------------------------------------------------------

#: [fleet] keys of a scenario file and the command-line options they stand for.
FLEET_KEYS = {
    "handsets": int, "strategy": str, "qos": int, "payload_size": int, "fan_out": int,
    "publishers": int, "session": str, "cleanup": bool, "client_id_prefix": str,
    "topic_prefix": str, "radio_model": str, "connect_timeout": float,
    "mqtt_version": str, "shared_group": str, "message_expiry": int, "session_expiry": int,
}
STAGE_KEYS = {"kind": str, "name": str, "duration": float, "push_rate": float,
              "handsets": int, "fraction": float, "how": str}


def load_scenario(path: Path) -> tuple[dict[str, Any], tuple[Stage, ...]]:
    """A fleet scenario (TOML): its ``[fleet]`` settings and its ``[[stage]]`` list.

    ::

        [fleet]
        handsets = 1000
        qos = 1

        [[stage]]
        kind = "ramp"
        duration = 10
        handsets = 1000
        push_rate = 50
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StageError(f"{path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"fleet", "stage"}
    if unknown:
        raise StageError(f"{path}: unknown table(s) {', '.join(sorted(unknown))} "
                         "(expected [fleet] and [[stage]])")
    fleet = _typed(data.get("fleet", {}), FLEET_KEYS, f"{path} [fleet]")
    raw_stages = data.get("stage", [])
    if not isinstance(raw_stages, list):
        raise StageError(f"{path}: stages are [[stage]] tables")
    stages = []
    for number, raw in enumerate(raw_stages, 1):
        values = _typed(raw, STAGE_KEYS, f"{path} stage {number}")
        if "kind" not in values or "duration" not in values:
            raise StageError(f"{path} stage {number}: needs kind and duration")
        stages.append(Stage(**values))
    return fleet, tuple(stages)


def _typed(table: Any, keys: dict[str, type], where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise StageError(f"{where}: expected a table")
    values = {}
    for key, value in table.items():
        kind = keys.get(key)
        if kind is None:
            raise StageError(f"{where}: unknown key {key!r} (known: {', '.join(keys)})")
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise StageError(f"{where}: {key} must be {kind.__name__}, got {value!r}")
        values[key] = value
    return values
