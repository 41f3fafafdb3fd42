"""One worker: a share of the fleet's handsets in one ``trio.run``.

Phases, timed from the common start ``t0`` (all workers and shards start together, after
their senders are connected):

1. **stages** (:mod:`.stages`): handset ``i`` starts at its ramp time; push ``k`` is due at its
   scheduled time (those of this worker's groups); a storm stage cuts the links of its share
   of the handsets at its start.
2. **drain** (at most the drain stage's length): nothing new is due; queued and in-flight
   pushes finish; it ends as soon as every accepted push has reached its handsets.
3. **close**: every client is closed (DISCONNECT), then the clean-up (:mod:`.cleanup`).

A stop request (Ctrl-C, SIGTERM, the coordinator) ends phase 1 early and skips the drain,
except that pushes already sent get up to :data:`STOP_GRACE_S` to be answered and to arrive
(in transit when the stop came, not lost); the report is made all the same. Every second a
sample (connected handsets, RSS, CPU and the cumulative counters) goes to ``progress`` and
into the timeline.
"""
from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, cast

import psutil
import trio

from pushsdk import BrokerConfig, ServerConfig, Subscription
from pushsdk.config import MqttTransport, MqttVersion, ServerMqttVersion
from pushsdk.heartbeat import parse_strategy
from pushsdk.transport import TcpConnector
from simulator.radio import get_model

from .cleanup import clean_up
from .observer import FleetObserver
from .plan import FleetPlan, ServerTarget
from .pushing import PushGenerator
from .socket_handset import SocketHandset
from .stages import stage_starts, storm_members
from .workload import MemberLedger, SharedLedger

__all__ = ["run_worker"]

#: How long closing the clients may take before the worker gives up on stragglers.
CLOSE_TIMEOUT_S = 15.0
#: Handsets started per step of the ramp: a sleep per handset would cost the loop a
#: scheduler pass per connection.
RAMP_STEP_S = 0.001

#: The name of every handset's task: without one, trio formats a new name string per task
#: (80 B a handset).
HANDSET_TASK = "pushsim.handset"

Progress = Callable[[dict[str, Any]], None]


def _connectors(plan: FleetPlan) -> list[TcpConnector]:
    ips = plan.source_ips or (None,)
    return [TcpConnector(ca_file=plan.ca_file, connect_timeout=plan.connect_timeout,
                         source_ip=ip) for ip in ips]


def _client_config(plan: FleetPlan, index: int, device_id: str) -> ServerConfig | BrokerConfig:
    target, workload = plan.target, plan.workload
    if isinstance(target, ServerTarget):
        return ServerConfig(server_url=target.url, app_key=target.app_key, device_id=device_id,
                            mqtt_version=cast(ServerMqttVersion, workload.mqtt_version),
                            mqtt_transport=cast(MqttTransport, workload.mqtt_transport))
    return BrokerConfig(host=target.host, port=target.port, tls=target.tls,
                        client_id=device_id,
                        topics=(Subscription(plan.topic_filter(plan.group_of(index)),
                                             workload.qos),),
                        username=target.username, password=target.password,
                        qos=workload.qos,
                        clean_session=workload.session == "clean",
                        mqtt_version=cast(MqttVersion, workload.mqtt_version),
                        websocket_path=target.websocket_path,
                        session_expiry=workload.session_expiry)


def _websocket(plan: FleetPlan) -> bool:
    """Whether the handsets' MQTT connections run over WebSocket."""
    if isinstance(plan.target, ServerTarget):
        return plan.workload.mqtt_transport == "ws"
    return plan.target.websocket_path is not None


def _ledgers(plan: FleetPlan, indices: list[int]) -> dict[int, MemberLedger]:
    """With a shared group: each member's view of its group's one ledger (the group's
    first member is its lead); without: nothing (every handset keeps its own)."""
    if not plan.shared:
        return {}
    views: dict[int, MemberLedger] = {}
    shared: dict[int, SharedLedger] = {}
    for index in indices:
        group = plan.group_of(index)
        ledger = shared.get(group)
        if ledger is None:
            ledger = shared[group] = SharedLedger(plan.groups)
        views[index] = MemberLedger(ledger, lead=index == plan.members(group)[0])
    return views


#: After a stop, pushes already sent get this long (at most the planned drain) for the
#: target's answer and to reach their handsets: one sent a few milliseconds before the stop
#: is in transit, and counting it lost made a stopped run fail its "lost" gate now and then.
#: One answered after it is counted unanswered (in flight when the run ended), not lost.
STOP_GRACE_S = 1.0

class _Worker:
    def __init__(self, plan: FleetPlan, worker: int, progress: Progress | None,
                 should_stop: Callable[[], bool] | None) -> None:
        self.plan = plan
        self.worker = worker
        self.progress = progress
        self.should_stop = should_stop
        self.observer = FleetObserver(plan.run_id)
        self.process = psutil.Process()
        self.process.cpu_percent(None)
        self.cpu_start = self.process.cpu_times()
        self.wall_start = trio.current_time()
        self.rss_start = self.process.memory_info().rss
        self.rss_connected = self.rss_peak = self.rss_start
        self.connected_peak = 0
        self.timeline: list[dict[str, Any]] = []
        self.sampler_late_max = 0.0
        self.stop = trio.Event()
        self.stopped_early = ""
        self.started = 0
        self.start_lag_max = 0.0  # how late the ramp started a handset, at most
        self.storms: list[dict[str, Any]] = []
        self.cleanup: dict[str, Any] = {}
        self.t_end = self.t_run_end = 0.0
        # One jitter source for the worker's handsets and senders: a Random is 2.5 KB of
        # Mersenne Twister state, as much as a fifth of an idle connection.
        self.rng = random.Random(None if plan.seed is None else f"{plan.seed}/{worker}")
        self.handsets = self._build_handsets()
        first = next(iter(self.handsets.values()), None)
        self.strategy_name = first.client.strategy.name if first else (plan.strategy or "")
        self.generator = PushGenerator(plan, worker, self.observer, self.handsets, self.rng)

    def _build_handsets(self) -> dict[int, SocketHandset]:
        plan = self.plan
        connectors = _connectors(plan)
        strategy = parse_strategy(plan.strategy) if plan.strategy else None
        self.radio = get_model(plan.radio_model)
        self.network_type = "wifi" if self.radio.name.startswith("wifi") else "cellular"
        handsets = {}
        indices = plan.worker_handsets(self.worker)
        ledgers, websocket = _ledgers(plan, indices), _websocket(plan)
        for index in indices:
            device_id = plan.device_id(index)  # one string, shared by the handset and its SDK
            handsets[index] = SocketHandset(
                index, self.observer, group=plan.group_of(index), groups=plan.groups,
                device_id=device_id,
                connector=connectors[(index // plan.shard.count) % len(connectors)],
                config=_client_config(plan, index, device_id), strategy=strategy,
                radio=self.radio, network_type=self.network_type,
                connect_timeout=plan.connect_timeout, rng=self.rng,
                ledger=ledgers.get(index), websocket=websocket)
        return handsets

    # --- stages ---------------------------------------------------------------------------

    async def _ramp(self, nursery: trio.Nursery) -> None:
        schedule, t0 = self.plan.ramp_schedule(), self.observer.t0
        per_second = self.observer.per_second
        for index, handset in self.handsets.items():
            at = t0 + schedule.start_of(index)
            if at > trio.current_time() + RAMP_STEP_S:
                await trio.sleep_until(at)
            now = trio.current_time()
            self.start_lag_max = max(self.start_lag_max, now - at)
            handset.started_at = now
            per_second.add("started", now - t0)
            self.started += 1
            nursery.start_soon(handset.client.run, name=HANDSET_TASK)

    async def _storms(self) -> None:
        for stage, start in zip(self.plan.stages, stage_starts(self.plan.stages)):
            if stage.kind != "storm":
                continue
            await trio.sleep_until(self.observer.t0 + start)
            hit = [h for i, h in self.handsets.items() if storm_members(i, stage.fraction)]
            for handset in hit:
                if stage.how == "network-change":
                    handset.client.notify_network_changed(f"storm-{start:g}",
                                                          self.network_type)
                elif handset.link is not None:
                    await trio.aclose_forcefully(handset.link)
            self.storms.append({"t_s": start, "stage": stage.label, "how": stage.how,
                                "handsets": len(hit)})

    # --- sampling -------------------------------------------------------------------------

    def _sample(self, now: float, record: bool = True) -> dict[str, Any]:
        observer, counters, generator = self.observer, self.observer.counters, self.generator
        rss = self.process.memory_info().rss
        self.rss_peak = max(self.rss_peak, rss)
        if observer.connected > self.connected_peak:
            self.connected_peak = observer.connected
            self.rss_connected = rss
        sample = {
            "t": round(now - observer.t0), "time": observer.clock.now(),
            "connected": observer.connected, "handsets_connected": observer.handsets_connected,
            "started": self.started, "connects": counters["connects"],
            "connect_failures": counters["connect_failures"],
            "disconnects": counters["disconnects"], "pushes_sent": generator.sent,
            "pushes_failed": generator.failed, "pushes_expected": counters["expected"],
            "pushes_delivered": counters["delivered"], "queued": generator.queued,
            "rss_bytes": rss, "cpu_percent": self.process.cpu_percent(None),
        }
        if record:
            self.timeline.append(sample)
        return sample

    async def _sampler(self) -> None:
        tick = 1
        while True:
            await trio.sleep_until(self.observer.t0 + tick)
            now = trio.current_time()
            self.sampler_late_max = max(self.sampler_late_max, now - self.observer.t0 - tick)
            tick = int(now - self.observer.t0) + 1
            sample = self._sample(now)
            if self.progress is not None:
                self.progress({**sample, "due": self._due_so_far(now),
                               "live": self.observer.live()})
            if self.should_stop is not None and self.should_stop() and not self.stop.is_set():
                self.stopped_early = "stop requested"
                self.stop.set()

    def _due_so_far(self, now: float) -> int:
        series = self.observer.per_second.counts["pushes_due"]
        return sum(series[: int(now - self.observer.t0) + 1])

    # --- the run --------------------------------------------------------------------------

    async def _run_stages(self, clients: trio.Nursery) -> None:
        plan = self.plan
        async with trio.open_nursery() as tasks:
            tasks.start_soon(self._ramp, clients)
            tasks.start_soon(self.generator.schedule_pushes)
            tasks.start_soon(self._storms)
            with trio.move_on_at(self.observer.t0 + plan.duration):
                await self.stop.wait()
            # On time, the ramp and the schedule end by themselves (a busy loop may lag a
            # little: every push due within the run is still queued). A stop cuts them
            # short; what was not sent counts as not sent.
            tasks.cancel_scope.cancel()
        self.t_run_end = trio.current_time()
        drain = 0.0 if self.stop.is_set() else plan.drain
        with trio.move_on_at(trio.current_time() + drain):
            while not self.generator.settled() and not self.stop.is_set():
                await trio.sleep(0.05)
        if self.stop.is_set():  # no drain, but what the target accepted may still arrive
            self.generator.pushing = False  # and nothing more goes out meanwhile
            with trio.move_on_after(min(plan.drain, STOP_GRACE_S)):
                while not self.generator.nothing_in_transit():
                    await trio.sleep(0.02)
        self.generator.cut_short = self.stop.is_set()

    async def _close(self) -> None:
        self.observer.closing = True
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                for handset in self.handsets.values():
                    nursery.start_soon(handset.client.aclose)

    async def _clean_up(self) -> None:
        plan = self.plan
        if not plan.workload.cleanup:
            return
        if isinstance(plan.target, ServerTarget):
            ids = [h.registration_id for h in self.handsets.values() if h.registration_id]
            self.cleanup = await clean_up(plan, [], ids)
            return
        client_ids = [p.client_id for p in self.generator.publishers if p.qos]
        if plan.workload.session == "persistent":
            client_ids += [h.device_id for h in self.handsets.values()]
        self.cleanup = await clean_up(plan, client_ids, [])

    async def main(self, go: Callable[[], Awaitable[float | None]] | None) -> dict[str, Any]:
        async with AsyncExitStack() as stack:
            senders = await stack.enter_async_context(trio.open_nursery())
            await self.generator.open_senders(stack, senders)
            start_wall = await go() if go is not None else None
            observer = self.observer
            observer.t0 = trio.current_time()
            observer.wall_t0 = observer.clock.now() if start_wall is None else start_wall
            self._sample(observer.t0)
            async with trio.open_nursery() as monitor, trio.open_nursery() as clients:
                monitor.start_soon(self._sampler)
                await self._run_stages(clients)
                self.generator.stop()
                senders.cancel_scope.cancel()
                await self._close()
                clients.cancel_scope.cancel()
                monitor.cancel_scope.cancel()
        await self._clean_up()
        self.t_end = trio.current_time()
        self._sample(self.t_end, record=False)  # RSS peak and CPU up to the end
        return self._report()

    # --- the report -----------------------------------------------------------------------

    def _rows(self) -> list[tuple]:
        observer = self.observer
        samples: dict[int, list[float]] = {}
        for index, latency in zip(observer.lat_index, observer.lat_s):
            samples.setdefault(index, []).append(latency)
        scenario = f"fleet-{self.plan.mode}"
        return [h.result(strategy=self.strategy_name, scenario=scenario,
                         network_type=self.network_type, run_start=observer.t0,
                         run_end=self.t_end, latencies=tuple(samples.get(index, ())))
                for index, h in self.handsets.items()]

    def _report(self) -> dict[str, Any]:
        plan, observer = self.plan, self.observer
        counters = Counter(observer.counters)
        counters.update(self.generator.counters())
        cpu = self.process.cpu_times()
        cpu_busy_s = sum(1 for s in self.timeline if s["cpu_percent"] >= 90)
        return {
            "rows": self._rows(),
            "events": observer.events(),
            "timeline": self.timeline,
            "counters": dict(counters),
            "failure_reasons": dict(observer.failure_reasons),
            "disconnect_reasons": dict(observer.disconnect_reasons),
            "failure_codes": dict(observer.failure_codes),
            "disconnect_codes": dict(observer.disconnect_codes),
            "push_failures": dict(observer.push_failures),
            "histograms": observer.histograms.encoded(),
            "per_second": observer.per_second.as_dict(),
            "flags": {
                "max_send_lag_s": self.generator.max_send_lag,
                "sampler_late_max_s": self.sampler_late_max,
                "start_lag_max_s": self.start_lag_max,
                "cpu_busy_s": cpu_busy_s, "stopped_early": self.stopped_early,
                "run_s": self.t_run_end - observer.t0,
            },
            "start_wall": observer.wall_t0,
            "storms": self.storms,
            "publisher_events": self.generator.publisher_events,
            "cleanup": self.cleanup,
            "process": {
                "name": f"shard {plan.shard} worker {self.worker}", "pid": os.getpid(),
                "handsets": len(self.handsets), "connected_peak": self.connected_peak,
                "rss_start_bytes": self.rss_start, "rss_connected_bytes": self.rss_connected,
                "rss_peak_bytes": self.rss_peak,
                "cpu_user_s": cpu.user - self.cpu_start.user,
                "cpu_system_s": cpu.system - self.cpu_start.system,
                "wall_s": self.t_end - self.wall_start,
                "timeline": [[s["t"], s["rss_bytes"], s["cpu_percent"]] for s in self.timeline],
            },
        }


def run_worker(plan: FleetPlan, worker: int = 0, *, progress: Progress | None = None,
               should_stop: Callable[[], bool] | None = None,
               go: Callable[[], Awaitable[float | None]] | None = None) -> dict[str, Any]:
    """Run ``worker``'s handsets of ``plan`` to the end; return its report (picklable).

    ``progress(sample)`` is called every second; ``should_stop()`` is polled every second
    and ends the stages early (the drain is skipped); ``go()`` (async) is awaited once the
    senders are connected, to start all workers together, and may return the common start
    as a Unix time.
    """
    async def main() -> dict[str, Any]:
        return await _Worker(plan, worker, progress, should_stop).main(go)
    return trio.run(main)
