"""Packet trace CSV files (interfaces §4) and the ``pushsim energy`` command's work.

A trace is UTF-8 CSV with the header ``t,dir,bytes`` (column order free, extra columns
ignored, blank lines and lines starting with ``#`` skipped)::

    t,dir,bytes
    0.0,up,2
    0.05,down,2

``t`` is seconds (any origin, non-decreasing), ``dir`` is ``up`` or ``down``, ``bytes`` a
whole number ≥ 0. Any bad row raises :class:`TraceError` naming the file and line, e.g.
``t.csv:7: bytes must be a whole number >= 0, got '-3'``. A trace with a header and no
rows is valid and costs 0 J.

``energy_command(model_name, trace_path)`` returns the JSON object ``pushsim energy``
prints; ``list_models()`` (re-exported from :mod:`simulator.radio.profiles`) the
``pushsim models`` rows. Both raise only :class:`TraceError` / :class:`UnknownModelError`
(subclasses of :class:`ValueError`) for user mistakes, with a one-line message.
"""
from __future__ import annotations

import contextlib
import csv
import math
import re
from collections.abc import Iterable, Iterator
from os import PathLike
from typing import NamedTuple

from simulator.radio.meter import RadioStatistics
from simulator.radio.model import RadioModel
from simulator.radio.profiles import UnknownModelError, get_model, list_models

__all__ = [
    "TraceError", "TracePacket", "UnknownModelError", "energy_command", "energy_of_trace",
    "iter_trace", "list_models", "read_trace",
]

HEADER = ("t", "dir", "bytes")
_WHOLE_NUMBER = re.compile(r"[0-9]+")


class TraceError(ValueError):
    """A trace file that cannot be read or has a bad row; the message names the line."""


class TracePacket(NamedTuple):
    t: float
    direction: str  # "up" | "down"
    nbytes: int


def iter_trace(lines: Iterable[str], *, name: str = "<trace>") -> Iterator[TracePacket]:
    """Parse trace lines lazily; ``name`` prefixes error messages (``name:line: ...``)."""
    reader = csv.reader(lines, skipinitialspace=True)
    columns: tuple[int, int, int] | None = None
    previous_t, previous_line = -math.inf, 0
    try:
        for row in reader:
            line = reader.line_num
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if columns is None:
                columns = _header_columns(row, name, line)
                continue
            t, direction, nbytes = _parse_row(row, columns, name, line)
            if t < previous_t:
                raise TraceError(
                    f"{name}:{line}: t={t!r} is earlier than t={previous_t!r} on line "
                    f"{previous_line}; the trace must be in time order"
                )
            previous_t, previous_line = t, line
            yield TracePacket(t, direction, nbytes)
    except csv.Error as exc:
        raise TraceError(f"{name}:{reader.line_num}: malformed CSV ({exc})") from None
    if columns is None:
        raise TraceError(f"{name}: missing header: expected a first line 't,dir,bytes'")


def read_trace(path: str | PathLike[str]) -> list[TracePacket]:
    """All packets of the trace file at ``path``."""
    with _open_lines(path) as lines:
        return list(iter_trace(lines, name=str(path)))


def energy_of_trace(model: RadioModel, packets: Iterable[TracePacket]) -> RadioStatistics:
    """Feed ``packets`` (in time order) through a fresh meter; tail run out to IDLE."""
    meter = model.new_meter()
    on_packet = meter.on_packet
    for t, direction, nbytes in packets:
        on_packet(t, direction, nbytes)
    return meter.statistics()


def energy_command(model_name: str, trace_path: str | PathLike[str],
                   device_ip: str | None = None) -> dict:
    """``pushsim energy --model NAME --trace FILE [--device-ip IP]``: the JSON object to
    print (interfaces §4). ``FILE`` is a CSV trace or a pcap/pcapng capture (told apart by
    its first bytes, not its name); ``device_ip`` applies to captures only.

    ``joules`` is promotion + tail + transfer energy until the radio is back in IDLE after
    the last packet, without the idle paging baseline (given as ``idle_baseline_w``).
    Energies are rounded to the microjoule, times to the microsecond.
    """
    from simulator.radio.capture import is_capture, read_capture

    model = get_model(model_name)
    if is_capture(trace_path):
        stats = energy_of_trace(model, read_capture(trace_path, device_ip))
        return statistics_json(stats)
    if device_ip is not None:
        raise TraceError(f"{trace_path}: --device-ip applies to pcap/pcapng captures, "
                         "and this is not one (a CSV trace says the direction itself)")
    with _open_lines(trace_path) as lines:
        stats = energy_of_trace(model, iter_trace(lines, name=str(trace_path)))
    return statistics_json(stats)


def statistics_json(stats: RadioStatistics) -> dict:
    """The JSON object of interfaces §4 for a meter's statistics."""
    return {
        "model": stats.model,
        "joules": _round(stats.joules),
        "promotions": stats.promotions,
        "radio_active_s": _round(stats.radio_active_s),
        "packets": stats.packets,
        "bytes_up": stats.bytes_up,
        "bytes_down": stats.bytes_down,
        "breakdown": {
            "promotion_j": _round(stats.promotion_j),
            "tail_j": _round(stats.tail_j),
            "transfer_j": _round(stats.transfer_j),
        },
        "fach_promotions": stats.fach_promotions,
        "first_packet_t": stats.first_packet_t,
        "radio_idle_at": _round(stats.radio_idle_at),
        "idle_baseline_w": _round(stats.idle_power_w),
    }


# -- helpers ---------------------------------------------------------------------------
def _header_columns(row: list[str], name: str, line: int) -> tuple[int, int, int]:
    fields = [field.strip().lower() for field in row]
    missing = [column for column in HEADER if column not in fields]
    if missing:
        raise TraceError(
            f"{name}:{line}: missing header: expected 't,dir,bytes', got {','.join(row)!r}"
        )
    duplicated = [column for column in HEADER if fields.count(column) > 1]
    if duplicated:
        raise TraceError(f"{name}:{line}: header names column {duplicated[0]!r} twice")
    return (fields.index("t"), fields.index("dir"), fields.index("bytes"))


def _parse_row(
    row: list[str], columns: tuple[int, int, int], name: str, line: int
) -> tuple[float, str, int]:
    if len(row) <= max(columns):
        raise TraceError(
            f"{name}:{line}: expected the fields t,dir,bytes, got {len(row)} field(s): "
            f"{','.join(row)!r}"
        )
    t_text, dir_text, bytes_text = (row[i].strip() for i in columns)
    try:
        t = float(t_text)
    except ValueError:
        t = math.nan
    if not math.isfinite(t):
        raise TraceError(f"{name}:{line}: t must be a finite number of seconds, got {t_text!r}")
    direction = dir_text.lower()
    if direction not in ("up", "down"):
        raise TraceError(f"{name}:{line}: dir must be 'up' or 'down', got {dir_text!r}")
    if not _WHOLE_NUMBER.fullmatch(bytes_text):
        raise TraceError(
            f"{name}:{line}: bytes must be a whole number >= 0, got {bytes_text!r}"
        )
    return t, direction, int(bytes_text)


@contextlib.contextmanager
def _open_lines(path: str | PathLike[str]) -> Iterator[Iterable[str]]:
    """Open a trace as text lines; OS and encoding problems become TraceError."""
    try:
        file = open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror or exc}") from None
    with file:
        try:
            yield file
        except UnicodeDecodeError:
            raise TraceError(f"{path}: not a UTF-8 text file") from None
        except OSError as exc:
            raise TraceError(f"cannot read trace {path}: {exc.strerror or exc}") from None


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)
