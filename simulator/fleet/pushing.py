"""The push generator of a worker: the schedule, the senders and their accounting.

Push ``k`` falls due at its scheduled time (:class:`~.stages.PushSchedule`) and is queued for
a sender at once; its tracer carries that scheduled time, so when the senders fall behind the
delay shows in the latency (and in the send lag), never hidden. A push due to a group not
every member of which has subscribed yet (during the ramp) waits until the last one has, and
is then scheduled anew (it could not have been received before).

Every push due ends in exactly one of: ``sent`` (the target accepted it: PUBACK/PUBCOMP,
written for QoS 0, or HTTP 200), ``failed`` (refused, or unanswered within
:data:`PUSH_TIMEOUT_S`), ``unanswered`` (still in flight when the run ended) or ``not_sent``
(the run ended first, or no member of its group ever subscribed). A sent or failed push is
*expected* by each member of its group subscribed when it went out; one that never reaches
such a member is *lost* to it (a refused push too: the app never got it), and so is one still
unanswered after the whole drain — but not one cut short by a stop (Ctrl-C, SIGTERM).
"""
from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import trio

from pushsdk import Backoff
from pushsdk.transport import TcpConnector

from .observer import FleetObserver, short_reason
from .plan import BrokerTarget, FleetPlan, ServerTarget
from .publisher import MqttPublisher, PushFailed
from .senders import DEFAULT_TTL_S, HttpClient, HttpPusher
from .workload import Tracer, encode_tracer, pushes_due, pushes_for

if TYPE_CHECKING:
    from .socket_handset import SocketHandset

__all__ = ["PushGenerator", "PUSH_TIMEOUT_S"]

#: HTTP connections per worker (server mode) and MQTT publisher connections (broker mode)
#: unless ``--publishers`` says otherwise; PUBLISHes in flight per MQTT publisher.
HTTP_SENDERS = 8
MQTT_PUBLISHERS = 1
MQTT_IN_FLIGHT = 32
#: How long one push may wait for its answer (the connection being down included).
PUSH_TIMEOUT_S = 30.0
#: A sender that could not reach the target waits like this before its next push.
SENDER_BACKOFF = Backoff(initial=0.25, multiplier=2.0, max_delay=5.0, reset_after=5.0)

Send = Callable[[int, list["SocketHandset"], float], Awaitable[None]]


class PushGenerator:
    """Schedules and sends the pushes of one worker's groups."""

    def __init__(self, plan: FleetPlan, worker: int, observer: FleetObserver,
                 handsets: dict[int, SocketHandset], rng: random.Random) -> None:
        self.plan = plan
        self.worker = worker
        self.observer = observer
        self.handsets = handsets
        self.rng = rng
        self.schedule = plan.push_schedule()
        self.groups = list(plan.worker_groups(worker))
        self.due_total = pushes_due(self.groups, plan.groups, self.schedule.count)
        self.send_channel, self.receive_channel = trio.open_memory_channel[Any](math.inf)
        self.pushing = True  # False once the run is over: nothing more is queued
        self.cut_short = False  # a stop skipped the drain: pushes in flight are not lost
        self.queued = self.in_flight = self.deferred = 0
        self.sent = self.failed = self.unanswered = 0
        self.late = 0  # pushes that left more than 0.1 s after their scheduled time
        self.max_send_lag = 0.0
        self.waiting: dict[int, list[int]] = {}  # group -> pushes due before it had a member
        self.pushers: list[HttpPusher] = []
        self.publishers: list[MqttPublisher] = []
        self.publisher_events: list[tuple[float, str, str, str]] = []
        observer.on_ready_hook = self._on_ready

    # --- schedule -------------------------------------------------------------------------

    async def schedule_pushes(self) -> None:
        """Queue each push at its due time (returns after the last one)."""
        t0, per_second, schedule = self.observer.t0, self.observer.per_second, self.schedule
        for seq in pushes_for(self.groups, self.plan.groups, schedule.count):
            due = schedule.due(seq)
            await trio.sleep_until(t0 + due)
            per_second.add("pushes_due", due)
            group = seq % self.plan.groups
            if all(h.subscribed for h in self._members(group)):
                self.send_channel.send_nowait((seq, t0 + due))
                self.queued += 1
            else:
                self.waiting.setdefault(group, []).append(seq)
                self.deferred += 1

    def _on_ready(self, handset: SocketHandset) -> None:
        if not all(h.subscribed for h in self._members(handset.group)):
            return
        seqs = self.waiting.pop(handset.group, None)
        if seqs and self.pushing:
            now = trio.current_time()
            for seq in seqs:
                self.send_channel.send_nowait((seq, now))
            self.queued += len(seqs)
            self.deferred -= len(seqs)
        elif seqs:
            self.waiting[handset.group] = seqs

    def _members(self, group: int) -> list[SocketHandset]:
        # Looked up when needed: a list per group would cost ~100 B per handset.
        handsets = self.handsets
        return [handsets[i] for i in self.plan.members(group)]

    def nothing_in_transit(self) -> bool:
        """No push sent is waiting for the target's answer, and every push expected so far
        has reached its handsets."""
        counters = self.observer.counters
        return self.in_flight == 0 and counters["delivered"] >= counters["expected"]

    def settled(self) -> bool:
        counters = self.observer.counters
        return (self.queued == 0 and self.in_flight == 0 and self.deferred == 0
                and counters["delivered"] >= counters["expected"])

    # --- sending --------------------------------------------------------------------------

    async def _sender(self, send: Send, backoff: bool) -> None:
        failures = 0
        async for seq, scheduled in self.receive_channel:
            self.queued -= 1
            if not self.pushing:  # the run is over (a stop): what is queued is not sent
                continue
            group = seq % self.plan.groups
            receivers = [h for h in self._members(group) if h.ready]
            if self.plan.shared:  # one member gets it: the push is expected once
                receivers = receivers[:1]
            ok, transport = await self._send_one(send, seq, scheduled, receivers)
            if transport and backoff:  # the target is unreachable: do not hammer it
                await trio.sleep(SENDER_BACKOFF.delay(failures, self.rng))
                failures += 1
            elif ok:
                failures = 0

    async def _send_one(self, send: Send, seq: int, scheduled: float,
                        receivers: list[SocketHandset]) -> tuple[bool, bool]:
        observer = self.observer
        now = trio.current_time()
        lag = now - scheduled
        observer.histograms.record("send_lag", lag)
        observer.per_second.lag(now - observer.t0, lag)
        self.max_send_lag = max(self.max_send_lag, lag)
        if lag > 0.1:
            self.late += 1
        self.in_flight += 1
        transport = False
        try:
            await send(seq, receivers, observer.wall_t0 + (scheduled - observer.t0))
        except PushFailed as exc:
            if self.cut_short:
                return self._answered_too_late()
            self.failed += 1
            observer.per_second.add("pushes_failed", trio.current_time() - observer.t0)
            observer.push_failures[short_reason(str(exc))] += 1
            ok, transport = False, exc.transport
        except trio.Cancelled:  # the run ended with it in flight
            self.unanswered += 1
            if not self.cut_short:  # unanswered after the whole drain: lost to them
                for handset in receivers:
                    observer.on_expected(handset, seq)
            raise
        else:
            if self.cut_short:
                return self._answered_too_late()
            self.sent += 1
            observer.per_second.add("pushes_sent", trio.current_time() - observer.t0)
            ok = True
        finally:
            self.in_flight -= 1
        # Sent or not, these handsets were meant to get it: a push the target refused or
        # did not answer is lost to them unless it arrives all the same.
        for handset in receivers:
            observer.on_expected(handset, seq)
        return ok, transport

    def _answered_too_late(self) -> tuple[bool, bool]:
        # The answer came after a stop's grace had ended (the task was already resuming
        # when the senders were cancelled): the handsets are closing, so the push was in
        # flight when the run ended, as if cancelled; neither sent nor lost.
        self.unanswered += 1
        return False, False

    def _tracer(self, seq: int, scheduled_wall: float) -> Tracer:
        return Tracer(self.plan.run_id, seq, seq % self.plan.groups, scheduled_wall)

    async def open_senders(self, stack: AsyncExitStack, nursery: trio.Nursery) -> None:
        """Connect the senders (HTTP clients or MQTT publishers) and start their tasks."""
        plan = self.plan
        connector = TcpConnector(ca_file=plan.ca_file, connect_timeout=plan.connect_timeout)
        if isinstance(plan.target, ServerTarget):
            for _ in range(plan.workload.publishers or HTTP_SENDERS):
                client = HttpClient(connector, plan.target.url, timeout=PUSH_TIMEOUT_S)
                stack.push_async_callback(client.aclose)
                pusher = HttpPusher(client, plan.target,
                                    ttl=plan.workload.message_expiry or DEFAULT_TTL_S)
                self.pushers.append(pusher)
                nursery.start_soon(self._sender, self._http_send(pusher), True)
            return
        assert isinstance(plan.target, BrokerTarget)
        for n in range(plan.workload.publishers or MQTT_PUBLISHERS):
            publisher = MqttPublisher(
                connector, plan.target,
                f"{plan.client_id_prefix}pub-{plan.shard.index}-{self.worker}-{n}",
                qos=plan.workload.qos, rng=self.rng, connect_timeout=plan.connect_timeout,
                on_event=self._publisher_event, version=plan.mqtt_level,
                session_expiry=plan.workload.session_expiry,
                message_expiry=plan.workload.message_expiry)
            self.publishers.append(publisher)
            stack.push_async_callback(publisher.aclose)
            await nursery.start(publisher.run)
            for _ in range(MQTT_IN_FLIGHT):
                nursery.start_soon(self._sender, self._mqtt_send(publisher), False)

    def _http_send(self, pusher: HttpPusher) -> Send:
        async def send(seq: int, receivers: list[SocketHandset], scheduled_wall: float) -> None:
            ids = [h.registration_id for h in receivers if h.registration_id]
            if not ids:
                raise PushFailed("no registered device in the group")
            await pusher.push(ids, self._tracer(seq, scheduled_wall).as_data(
                self.plan.workload.payload_size))
        return send

    def _mqtt_send(self, publisher: MqttPublisher) -> Send:
        async def send(seq: int, receivers: list[SocketHandset], scheduled_wall: float) -> None:
            payload = encode_tracer(self._tracer(seq, scheduled_wall),
                                    self.plan.workload.payload_size)
            await publisher.publish(self.plan.topic(seq % self.plan.groups), payload,
                                    trio.current_time() + PUSH_TIMEOUT_S)
        return send

    def _publisher_event(self, kind: str, reason: str) -> None:
        if kind != "connected" or self.publisher_events:
            self.publisher_events.append((self.observer.since_start(), kind, "",
                                          short_reason(reason)))

    def stop(self) -> None:
        self.pushing = False
        self.send_channel.close()

    def counters(self) -> dict[str, int]:
        unanswered = self.unanswered + self.in_flight
        not_sent = self.due_total - self.sent - self.failed - unanswered
        return {
            "pushes_due": self.due_total, "pushes_sent": self.sent,
            "pushes_failed": self.failed, "pushes_unanswered": unanswered,
            "pushes_not_sent": not_sent, "pushes_waiting_for_subscriber": self.deferred,
            "pushes_late": self.late,
            "rate_limited": sum(p.rate_limited for p in self.pushers),
            "publisher_connects": sum(p.connects for p in self.publishers),
        }
