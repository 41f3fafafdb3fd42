"""argparse value types shared by the command lines: one-line messages, no tracebacks."""
from __future__ import annotations

import argparse
import math


def _number(text: str, kind, check, wanted: str):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not check(value):
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "a whole number ≥ 1")


def non_negative_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 0, "a whole number ≥ 0")


def positive_float(text: str) -> float:
    return _number(text, float, lambda v: v > 0 and math.isfinite(v), "a number > 0")


def run_hours(text: str) -> float:
    """``--hours``: a run length from a minute to a year (as a scenario's ``hours``)."""
    from simulator.scenario import MAX_HOURS, MIN_HOURS

    return _number(text, float, lambda v: MIN_HOURS <= v <= MAX_HOURS,
                   f"a number of hours from {MIN_HOURS:.4g} (a minute) to {MAX_HOURS:g} (a year)")
