"""``pushsim fleet``: many handsets, each the real SDK over real TCP/TLS, against the reference
server or any MQTT 3.1.1 broker — connect rate, handshake and delivery latency, loss and
duplicates, memory and CPU per process, and each handset's battery proxy. See docs/fleet.md.

Modules: ``plan`` (what to run, sharding), ``limits`` (open files, local ports, source
addresses), ``workload`` (numbered, time-stamped pushes), ``traffic`` (counting streams),
``socket_handset`` (one PushClient and its observer), ``senders`` (HTTP pushes, MQTT publisher),
``worker`` (one ``trio.run``), ``runner`` (processes, progress), ``results`` (files,
merging), ``summary_text`` and ``fleet_plots``.
"""
from .plan import BrokerTarget, FleetPlan, ServerTarget, Shard, parse_shard
from .results import FleetResults, ResultsError
from .runner import FleetError, check_limits, prepare_broker, prepare_server, run_fleet

__all__ = [
    "BrokerTarget", "FleetPlan", "FleetError", "FleetResults", "ResultsError",
    "ServerTarget", "Shard", "check_limits", "parse_shard", "prepare_broker", "prepare_server",
    "run_fleet",
]
