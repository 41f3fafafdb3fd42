"""``pushsim fleet``: many handsets, each the real SDK over real TCP/TLS, against the reference
server or any MQTT 3.1.1 broker — connect rate, handshake and delivery latency, loss and
duplicates, memory and CPU per process, and each handset's battery proxy. See docs/fleet.md.

Modules: ``plan`` (what to run, the split over shards and workers), ``stages`` (ramp, hold,
storm, drain; scenario files), ``limits`` (open files, local ports, source addresses),
``workload`` (tracer payloads, ledgers), ``traffic`` (metered streams), ``socket_handset``
(one PushClient and its measurements), ``observer`` and ``measure`` (counters, HDR
histograms, per-second counts), ``publisher`` (MQTT QoS 0/1/2, reconnecting), ``senders``
(HTTP), ``pushing`` (the push generator), ``worker`` (one ``trio.run``), ``runner``
(processes, signals), ``preflight``, ``cleanup``, ``live`` (progress, Prometheus),
``results``/``results_files``/``caveats`` (figures, files, warnings), ``gates``
(``--fail-if``), ``summary_text`` and ``fleet_plots``. On a Dask cluster:
:mod:`simulator.distributed`.
"""
from .plan import BrokerTarget, FleetPlan, ServerTarget, Shard, Workload, parse_shard
from .results import FleetResults, ResultsError

__all__ = ["BrokerTarget", "FleetPlan", "FleetResults", "ResultsError", "ServerTarget",
           "Shard", "Workload", "parse_shard"]
