"""Radio energy models (pure Python, no trio) and the ``pushsim energy`` command's work.

Per handset::

    from simulator.radio import get_model
    meter = get_model("lte").new_meter()          # lte = lte-huang2012
    meter.on_packet(t, "up", nbytes)              # t non-decreasing; O(1)
    stats = meter.statistics(until=day_end)       # frozen RadioStatistics
    stats.joules, stats.promotions, stats.radio_active_s, stats.idle_baseline_j(day_s)

For the command line: ``energy_command(model_name, trace_path) -> dict`` and
``list_models() -> [(name, description)]``; user mistakes raise :class:`TraceError` or
:class:`UnknownModelError` (both :class:`ValueError`) with a one-line message.
For validation: ``daily_heartbeat_energy(model, interval_s)``.

Models, accounting rules and sources: docs/energy.md.
"""
from simulator.radio.daily import DAY_S, MQTT_PING, daily_heartbeat_energy, heartbeat_cost
from simulator.radio.meter import RadioMeter, RadioStatistics
from simulator.radio.model import (
    FachRules,
    Promotion,
    RadioModel,
    TailPhase,
    TransferPower,
)
from simulator.radio.profiles import (
    ALIASES,
    MODELS,
    UnknownModelError,
    get_model,
    list_models,
)
from simulator.radio.trace import (
    TraceError,
    TracePacket,
    energy_command,
    energy_of_trace,
    iter_trace,
    read_trace,
    statistics_json,
)

__all__ = [
    "ALIASES", "DAY_S", "MODELS", "MQTT_PING", "FachRules", "Promotion", "RadioMeter",
    "RadioModel", "RadioStatistics", "TailPhase", "TraceError", "TracePacket",
    "TransferPower", "UnknownModelError", "daily_heartbeat_energy", "energy_command",
    "energy_of_trace", "get_model", "heartbeat_cost", "iter_trace", "list_models",
    "read_trace", "statistics_json",
]
