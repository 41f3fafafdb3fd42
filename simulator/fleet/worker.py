"""One worker: a share of the fleet's handsets in one ``trio.run``.

Phases, timed from the worker's start ``t0`` (all workers start together):

1. **run** (``duration`` s): handset ``i`` starts at ``t0 + i / ramp``; push ``k`` is due at
   ``t0 + k / push_rate`` (those for this worker's handsets). A push due to a handset that has
   not subscribed yet waits until it has, then goes out at once.
2. **drain** (at most ``drain`` s): no new pushes are due; queued and in-flight ones finish;
   it ends early once every accepted push has reached its handset.
3. **close**: every client is closed (DISCONNECT); a last sample is taken.

Every second a sample (connected handsets, connects, failures, pushes, RSS, CPU) goes to the
``progress`` callback and into the timeline.
"""
from __future__ import annotations

import math
import os
import random
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import psutil
import trio

from pushsdk import BrokerConfig, ServerConfig, SystemClock
from pushsdk.heartbeat import parse_strategy
from pushsdk.transport import TcpConnector
from simulator.radio import get_model

from .plan import FleetPlan, ServerTarget
from .socket_handset import SocketHandset, device_id, topic
from .senders import HttpClient, HttpPusher, PushFailed, open_publisher
from .workload import Tracer, encode_tracer, pushes_due, pushes_for

__all__ = ["FleetObserver", "run_worker"]

#: Concurrent pushes per worker: HTTP connections (server mode) or PUBLISHes in flight.
HTTP_SENDERS = 8
MQTT_SENDERS = 32
#: How long closing the clients may take before the worker gives up on stragglers.
CLOSE_TIMEOUT_S = 15.0

Progress = Callable[[dict[str, Any]], None]


def _reason(text: str) -> str:
    return text if len(text) <= 160 else text[:157] + "..."


class FleetObserver:
    """The worker's fleet-wide counters, fed by its handsets."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.clock = SystemClock()
        self.t0 = 0.0
        self.closing = False
        self.connected = 0  # handsets connected right now
        self.handsets_connected = 0  # handsets that connected at least once
        self.counters: Counter[str] = Counter()
        self.failure_reasons: Counter[str] = Counter()
        self.disconnect_reasons: Counter[str] = Counter()
        self.push_failures: Counter[str] = Counter()
        #: (index, t, outcome, tcp_connect_s, handshake_s, registration_s, reason)
        self.events: list[tuple] = []
        self.on_ready_hook: Callable[[SocketHandset], None] | None = None

    # handset hooks
    def on_connected(self, handset: SocketHandset, now: float, tcp_s: float, handshake_s: float,
                     registration_s: float, first: bool) -> None:
        self.connected += 1
        self.counters["connects"] += 1
        if first:
            self.handsets_connected += 1
        self.events.append((handset.index, now - self.t0, "connected", tcp_s, handshake_s,
                            registration_s, ""))

    def on_disconnected(self, handset: SocketHandset, reason: str) -> None:
        self.connected -= 1
        if not self.closing:
            self.counters["disconnects"] += 1
            self.disconnect_reasons[_reason(reason)] += 1

    def on_failed(self, handset: SocketHandset, now: float, tcp_s: float, reason: str) -> None:
        self.counters["connect_failures"] += 1
        self.failure_reasons[_reason(reason)] += 1
        self.events.append((handset.index, now - self.t0, "failed", tcp_s, math.nan, math.nan,
                            _reason(reason)))

    def on_ready(self, handset: SocketHandset) -> None:
        if self.on_ready_hook is not None:
            self.on_ready_hook(handset)

    def on_received(self, handset: SocketHandset, tracer: Tracer | None) -> None:
        ledger = handset.ledger
        before = ledger.delivered
        self.counters["settled"] += ledger.on_received(tracer, self.run_id, handset.index,
                                                       self.clock.now())
        self.counters["delivered"] += ledger.delivered - before

    def on_deleted(self, handset: SocketHandset, count: int) -> None:
        self.counters["deleted_notices"] += 1
        self.counters["deleted_messages"] += count

    def on_accepted(self, handset: SocketHandset, seq: int) -> None:
        self.counters["pushes_accepted"] += 1
        self.counters["settled"] += handset.ledger.on_accepted(seq)


def _connectors(config: FleetPlan) -> list[TcpConnector]:
    ips = config.source_ips or (None,)
    return [TcpConnector(ca_file=config.ca_file, connect_timeout=config.connect_timeout,
                         source_ip=ip) for ip in ips]


def _client_config(config: FleetPlan, index: int) -> ServerConfig | BrokerConfig:
    target = config.target
    if isinstance(target, ServerTarget):
        return ServerConfig(server_url=target.url, app_key=target.app_key,
                            device_id=device_id(index))
    return BrokerConfig(host=target.host, port=target.port, tls=target.tls,
                        client_id=device_id(index), topics=[topic(index)],
                        username=target.username, password=target.password, qos=1)


class _Worker:
    def __init__(self, config: FleetPlan, worker: int, progress: Progress | None,
                 should_stop: Callable[[], bool] | None) -> None:
        self.config = config
        self.worker = worker
        self.progress = progress
        self.should_stop = should_stop
        self.observer = FleetObserver(config.run_id)
        self.process = psutil.Process()
        self.process.cpu_percent(None)
        self.cpu_start = self.process.cpu_times()
        self.wall_start = trio.current_time()
        self.rss_start = self.process.memory_info().rss
        self.rss_connected = self.rss_peak = self.rss_start
        self.connected_peak = 0
        self.timeline: list[dict[str, Any]] = []
        self.stop = trio.Event()
        self.queued = 0  # pushes waiting for a sender
        self.in_flight = 0
        self.deferred = 0  # pushes waiting for their handset to subscribe
        self.max_send_lag = 0.0
        self.t0 = 0.0
        self.t_end = 0.0
        connectors = _connectors(config)
        strategy = parse_strategy(config.strategy) if config.strategy else None
        self.radio = get_model(config.radio_model)
        self.network_type = "wifi" if self.radio.name.startswith("wifi") else "cellular"
        # One jitter source for the worker's handsets: a Random is 2.5 KB of Mersenne
        # Twister state, as much as a fifth of an idle connection.
        rng = random.Random(None if config.seed is None else f"{config.seed}/{worker}")
        self.indices = config.worker_handsets(worker)
        self.handsets = {
            index: SocketHandset(index, self.observer, connector=connectors[index % len(connectors)],
                           config=_client_config(config, index), strategy=strategy,
                           radio=self.radio, network_type=self.network_type,
                           connect_timeout=config.connect_timeout,
                           rng=rng)
            for index in self.indices
        }
        first = next(iter(self.handsets.values()), None)
        self.strategy_name = first.client.strategy.name if first else (config.strategy or "")
        self.send_channel, self.receive_channel = trio.open_memory_channel[Any](math.inf)
        self.pushing = True  # False once the drain is over: nothing more is queued
        self.pushers: list[HttpPusher] = []
        self.observer.on_ready_hook = self._on_ready

    # --- pushes ---------------------------------------------------------------------------

    def _on_ready(self, handset: SocketHandset) -> None:
        if handset.deferred and self.pushing:
            now = trio.current_time()
            for seq in handset.deferred:
                self.send_channel.send_nowait((handset, seq, now))
            self.queued += len(handset.deferred)
            self.deferred -= len(handset.deferred)
            handset.deferred.clear()

    async def _schedule_pushes(self) -> None:
        config = self.config
        if config.push_rate <= 0:
            return
        for seq in pushes_for(self.indices, config.handsets, config.push_count()):
            due = self.t0 + seq / config.push_rate
            await trio.sleep_until(due)
            handset = self.handsets[seq % config.handsets]
            if handset.ready:
                self.send_channel.send_nowait((handset, seq, due))
                self.queued += 1
            else:
                handset.deferred.append(seq)
                self.deferred += 1

    async def _send_pushes(self, send: Callable[[SocketHandset, int], Any]) -> None:
        async for handset, seq, queued_at in self.receive_channel:
            self.queued -= 1
            self.in_flight += 1
            self.max_send_lag = max(self.max_send_lag, trio.current_time() - queued_at)
            try:
                await send(handset, seq)
            except PushFailed as exc:
                self.observer.push_failures[_reason(str(exc))] += 1
            else:
                self.observer.on_accepted(handset, seq)
            finally:
                self.in_flight -= 1

    def _make_data(self, handset: SocketHandset, seq: int) -> Callable[[], dict[str, Any]]:
        run, clock = self.config.run_id, self.observer.clock
        return lambda: Tracer(run, seq, handset.index, clock.now()).as_data()

    async def _open_senders(self, stack: AsyncExitStack, nursery: trio.Nursery) -> None:
        config, target = self.config, self.config.target
        connector = TcpConnector(ca_file=config.ca_file, connect_timeout=config.connect_timeout)
        if isinstance(target, ServerTarget):
            for _ in range(HTTP_SENDERS):
                client = HttpClient(connector, target.url)
                stack.push_async_callback(client.aclose)
                pusher = HttpPusher(client, target)
                self.pushers.append(pusher)

                async def send(handset: SocketHandset, seq: int, pusher=pusher) -> None:
                    await pusher.push(handset.registration_id, self._make_data(handset, seq))
                nursery.start_soon(self._send_pushes, send)
            return
        client_id = f"pushsim-publisher-{config.run_id}-{config.shard.index}-{self.worker}"
        publisher = await stack.enter_async_context(open_publisher(connector, target, client_id))

        async def publish(handset: SocketHandset, seq: int) -> None:
            tracer = Tracer(config.run_id, seq, handset.index, self.observer.clock.now())
            await publisher.publish(topic(handset.index), encode_tracer(tracer))
        for _ in range(MQTT_SENDERS):
            nursery.start_soon(self._send_pushes, publish)

    def _settled(self) -> bool:
        counters = self.observer.counters
        return (self.queued == 0 and self.in_flight == 0 and self.deferred == 0
                and counters["settled"] >= counters["pushes_accepted"])

    # --- handsets and sampling ------------------------------------------------------------

    async def _ramp(self, nursery: trio.Nursery) -> None:
        ramp = self.config.ramp
        for index in self.indices:
            if not math.isinf(ramp):
                await trio.sleep_until(self.t0 + index / ramp)
            handset = self.handsets[index]
            handset.started_at = trio.current_time()
            nursery.start_soon(handset.client.run)

    def _sample(self, now: float, record: bool = True) -> dict[str, Any]:
        observer, counters = self.observer, self.observer.counters
        rss = self.process.memory_info().rss
        self.rss_peak = max(self.rss_peak, rss)
        if observer.connected > self.connected_peak:
            self.connected_peak = observer.connected
            self.rss_connected = rss
        sample = {
            "t": round(now - self.t0), "connected": observer.connected,
            "handsets_connected": observer.handsets_connected,
            "connects": counters["connects"], "connect_failures": counters["connect_failures"],
            "disconnects": counters["disconnects"], "pushes_sent": counters["pushes_accepted"],
            "pushes_delivered": counters["delivered"],
            "push_failures": sum(observer.push_failures.values()),
            "rss_bytes": rss, "cpu_percent": self.process.cpu_percent(None),
        }
        if record:
            self.timeline.append(sample)
        return sample

    async def _sampler(self) -> None:
        tick = 1
        while True:
            await trio.sleep_until(self.t0 + tick)
            tick += 1
            sample = self._sample(trio.current_time())
            if self.progress is not None:
                self.progress(sample)
            if self.should_stop is not None and self.should_stop():
                self.stop.set()

    async def _run_until(self, deadline: float) -> None:
        with trio.move_on_at(deadline):
            await self.stop.wait()

    async def _drain(self, deadline: float) -> None:
        with trio.move_on_at(deadline):
            while not self._settled():
                await trio.sleep(0.05)

    async def _close(self) -> None:
        self.observer.closing = True
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                for handset in self.handsets.values():
                    nursery.start_soon(handset.client.aclose)

    async def main(self, go: Callable[[], Any] | None) -> dict[str, Any]:
        config = self.config
        async with AsyncExitStack() as stack:
            senders = await stack.enter_async_context(trio.open_nursery())
            await self._open_senders(stack, senders)
            if go is not None:
                await go()
            self.t0 = self.observer.t0 = trio.current_time()
            self._sample(self.t0)
            async with trio.open_nursery() as monitor, trio.open_nursery() as clients:
                monitor.start_soon(self._sampler)
                async with trio.open_nursery() as tasks:
                    tasks.start_soon(self._ramp, clients)
                    tasks.start_soon(self._schedule_pushes)
                    await self._run_until(self.t0 + config.duration)
                    # On time, the ramp and the schedule end by themselves (a busy loop may
                    # lag a little: every push due within the run is still queued). Ctrl-C
                    # cuts them short; what was not sent counts as not sent.
                    if self.stop.is_set():
                        tasks.cancel_scope.cancel()
                drain = 0 if self.stop.is_set() else config.drain
                await self._drain(trio.current_time() + drain)
                self.pushing = False
                self.send_channel.close()
                senders.cancel_scope.cancel()
                await self._close()
                clients.cancel_scope.cancel()
                monitor.cancel_scope.cancel()
        self.t_end = trio.current_time()
        self._sample(self.t_end, record=False)  # RSS peak and CPU up to the end
        return self._report()

    def _report(self) -> dict[str, Any]:
        config, observer = self.config, self.observer
        scenario = f"fleet-{config.mode}"
        rows = [h.result(strategy=self.strategy_name, scenario=scenario,
                         network_type=self.network_type, run_start=self.t0, run_end=self.t_end)
                for h in self.handsets.values()]
        counters = Counter(observer.counters)
        counters["pushes_failed"] = sum(observer.push_failures.values())
        counters["pushes_due"] = pushes_due(self.indices, config.handsets, config.push_count())
        counters["pushes_not_sent"] = (counters["pushes_due"] - counters["pushes_accepted"]
                                       - counters["pushes_failed"])
        counters["rate_limited"] = sum(p.rate_limited for p in self.pushers)
        cpu = self.process.cpu_times()
        return {
            "rows": rows,
            "events": observer.events,
            "timeline": self.timeline,
            "counters": dict(counters),
            "failure_reasons": dict(observer.failure_reasons),
            "disconnect_reasons": dict(observer.disconnect_reasons),
            "push_failures": dict(observer.push_failures),
            "max_send_lag_s": self.max_send_lag,
            "process": {
                "name": f"shard {config.shard} worker {self.worker}", "pid": os.getpid(),
                "handsets": len(self.handsets), "connected_peak": self.connected_peak,
                "rss_start_bytes": self.rss_start, "rss_connected_bytes": self.rss_connected,
                "rss_peak_bytes": self.rss_peak,
                "cpu_user_s": cpu.user - self.cpu_start.user,
                "cpu_system_s": cpu.system - self.cpu_start.system,
                "wall_s": self.t_end - self.wall_start,
                "timeline": [[s["t"], s["rss_bytes"], s["cpu_percent"]] for s in self.timeline],
            },
        }


def run_worker(config: FleetPlan, worker: int = 0, *, progress: Progress | None = None,
               should_stop: Callable[[], bool] | None = None,
               go: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Run ``worker``'s handsets of ``config`` to the end; return its report (picklable).

    ``progress(sample)`` is called every second; ``should_stop()`` is polled every second
    and ends the run phase early (drain is skipped); ``go()`` (async) is awaited once the
    pushers are connected, to start all workers together.
    """
    async def main() -> dict[str, Any]:
        return await _Worker(config, worker, progress, should_stop).main(go)
    return trio.run(main)
