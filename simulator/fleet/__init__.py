"""``pushsim fleet``: many handsets, each the real SDK over real TCP/TLS, against the reference
server or any MQTT 3.1.1 broker — connect rate, handshake and delivery latency, loss and
duplicates, memory and CPU per process, and each handset's battery proxy. See docs/fleet.md.

Modules: ``config`` (what to run, sharding), ``limits`` (open files, local ports, source
addresses), ``workload`` (numbered, time-stamped pushes), ``traffic`` (counting streams),
``handset`` (one PushClient and its probe), ``senders`` (HTTP pushes, MQTT publisher),
``worker`` (one ``trio.run``), ``runner`` (processes, progress), ``results`` (files,
merging), ``report`` and ``plots``.
"""
from .config import BrokerTarget, FleetConfig, ServerTarget, Shard, parse_shard
from .results import FleetResults, ResultsError
from .runner import FleetError, check_limits, prepare_broker, prepare_server, run_fleet

__all__ = [
    "BrokerTarget", "FleetConfig", "FleetError", "FleetResults", "ResultsError",
    "ServerTarget", "Shard", "check_limits", "parse_shard", "prepare_broker", "prepare_server",
    "run_fleet",
]
