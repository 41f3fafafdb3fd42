"""A hostile MQTT server against the SDK, in virtual time.

Each test scripts one kind of misbehaviour — garbage, a malformed CONNACK, a PUBLISH with a
huge remaining length, silence, refusals, a server that hangs up at once — and checks the
same four things: the SDK reports it through ``on_state_change`` with a reason naming the
problem; it backs off within the policy's bounds (or waits the maximum for refusals that a
retry cannot fix); the app keeps running; and an hour of it costs a bounded number of
connection attempts and scheduler steps, i.e. the CPU never spins.
"""
from __future__ import annotations

import random

import pytest
import trio

from pushsdk import (
    IdentifierRejected,
    NotAuthorized,
    PushError,
    RegistrationRefused,
    UnsupportedProtocolVersion,
    Backoff,
    ClientState,
    FixedStrategy,
    MemoryStateStore,
    PushClient,
    ServerConfig,
    VirtualClock,
)
from pushsdk.protocol import (
    NEED_DATA,
    ConnAck,
    Connect,
    Connection,
    ConnectionClosed,
    Role,
    SubAck,
    Subscribe,
)
from sdk_harness import APP_KEY, EPOCH, MQTT_HOST, MQTT_PORT, SERVER_URL, MemoryNetwork, Registrar

HOUR = 3600.0
BACKOFF = Backoff()  # initial 1 s, doubling, at most 300 s: what an app gets by default
SEED = 11


class _Closed(Exception):
    pass


async def _next(conn: Connection, stream: trio.abc.Stream, kind: type):
    """Read until the client sends a packet of ``kind``; raise _Closed at its EOF."""
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            conn.receive_data(await stream.receive_some())
        elif isinstance(event, ConnectionClosed):
            raise _Closed
        elif isinstance(event, kind):
            return event


async def _drain(stream: trio.abc.Stream) -> None:
    """Swallow whatever the client sends until it hangs up."""
    while await stream.receive_some():
        pass


class HostileServer:
    """An MQTT endpoint whose every connection runs ``behaviour(conn, stream)``."""

    def __init__(self, behaviour) -> None:
        self.behaviour = behaviour
        self.connections = 0

    async def handle(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        conn = Connection(Role.SERVER)
        try:
            await self.behaviour(conn, stream)
        except (_Closed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)


# --- behaviours ----------------------------------------------------------------------------

def send_after_connect(data: bytes):
    async def behaviour(conn, stream):
        await _next(conn, stream, Connect)
        await stream.send_all(data)
        await _drain(stream)
    return behaviour


def huge_publish_after_subscribe(header: bytes):
    async def behaviour(conn, stream):
        await _next(conn, stream, Connect)
        await stream.send_all(conn.send(ConnAck(0)))
        subscribe = await _next(conn, stream, Subscribe)
        await stream.send_all(conn.send(SubAck(subscribe.packet_id, (1,))))
        await stream.send_all(header + b"\x00" * 4096)  # the start of an endless body
        await _drain(stream)
    return behaviour


async def never_answers(conn, stream):
    await _next(conn, stream, Connect)
    await _drain(stream)


async def hangs_up_at_once(conn, stream):
    return


def refuses_with(code: int):
    async def behaviour(conn, stream):
        await _next(conn, stream, Connect)
        await stream.send_all(conn.send(ConnAck(code)))
        await _drain(stream)
    return behaviour


# --- the world around it --------------------------------------------------------------------

class StepCounter(trio.abc.Instrument):
    """Counts scheduler steps of every task: a busy loop shows up as a huge count."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1


class Run:
    """One client against one hostile server, with everything a test looks at."""

    def __init__(self, nursery: trio.Nursery, behaviour, *, registrar: Registrar | None = None,
                 state_store: MemoryStateStore | None = None):
        self.net = MemoryNetwork(nursery)
        self.registrar = registrar or Registrar()
        self.server = HostileServer(behaviour)
        self.net.serve("push.test", 8480, self.registrar.handle)
        self.net.serve(MQTT_HOST, MQTT_PORT, self.server.handle)
        self.changes: list[tuple[float, ClientState, ClientState, str]] = []
        self.ticks = 0
        self.permanent = False  # the test expects the client to stop on a permanent error
        self.client = PushClient(
            ServerConfig(server_url=SERVER_URL, app_key=APP_KEY, device_id="dev-1"),
            connector=self.net, clock=VirtualClock(EPOCH), rng=random.Random(SEED),
            strategy=FixedStrategy(270), backoff=BACKOFF, connect_timeout=10.0,
            state_store=state_store, on_state_change=self.on_state_change,
        )

    def on_state_change(self, old, new, reason):
        self.changes.append((trio.current_time(), old, new, reason))

    async def app(self) -> None:
        """The rest of the app: it must keep ticking whatever the server does."""
        while True:
            await trio.sleep(1)
            self.ticks += 1

    async def run_for(self, seconds: float) -> StepCounter:
        steps = StepCounter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.app)
            trio.lowlevel.add_instrument(steps)
            try:
                try:
                    async with self.client:
                        await trio.sleep(seconds)
                        assert self.client.state is not ClientState.CLOSED
                except PushError:
                    if not self.permanent:
                        raise
                    await trio.sleep(seconds - trio.current_time())
            finally:
                trio.lowlevel.remove_instrument(steps)
            nursery.cancel_scope.cancel()
        assert self.ticks >= seconds - 1  # the app ran throughout
        return steps

    # What tests read.

    def attempts(self) -> list[float]:
        return [t for t, host, _, _ in self.net.attempts if host == MQTT_HOST]

    def waits(self) -> list[tuple[float, str]]:
        return [(t, reason) for t, _, new, reason in self.changes if new is ClientState.WAITING]

    def delays(self) -> list[float]:
        """Time from each WAITING report to the next connection attempt (every attempt in
        these tests fails once, so the k-th report follows the k-th attempt)."""
        waits = self.waits()
        assert len(waits) == len(self.attempts())
        return [attempt - t for (t, _), attempt in zip(waits, self.attempts()[1:])]


def assert_backoff_bounds(run: Run) -> None:
    delays = run.delays()
    assert len(delays) >= 10
    for attempt, delay in enumerate(delays):
        assert 0 <= delay <= BACKOFF.ceiling(attempt), (attempt, delay)
    assert max(delays) > 60  # it did grow: full jitter up to the 300 s cap


def assert_no_spin(run: Run, steps: StepCounter, *, mean_delay: float) -> None:
    """Bounded attempts (at most twice what the mean delay allows in an hour) and a bounded
    number of scheduler steps per attempt."""
    attempts = len(run.attempts())
    assert attempts <= HOUR / mean_delay * 2, attempts
    # The app's ticker costs one step a second; everything else is the client, the
    # hostile peer and the in-memory transport: 17-45 steps per attempt measured, so 100
    # leaves room for changes while a loop that spins shows up as thousands.
    assert steps.steps - HOUR <= 100 * attempts + 200, (steps.steps, attempts)


# Mean delay of the full-jitter backoff once capped: U(0, 300) averages 150 s.
CAPPED_MEAN = BACKOFF.max_delay / 2


@pytest.mark.parametrize("name, behaviour, reason", [
    ("garbage after CONNECT", send_after_connect(b"\xf0\x00\xde\xad\xbe\xef" * 8),
     "protocol error before CONNACK"),
    ("CONNACK with a wrong length", send_after_connect(b"\x20\x03\x00\x00\x00"),
     "protocol error before CONNACK: CONNACK"),
    ("CONNACK with reserved flags", send_after_connect(b"\x20\x02\xfe\x00"),
     "reserved bits"),
    ("CONNACK with return code 9", send_after_connect(b"\x20\x02\x00\x09"),
     "return code 9"),
    ("SUBACK instead of CONNACK", send_after_connect(b"\x90\x03\x00\x01\x01"),
     "protocol error before CONNACK"),
    ("PUBLISH with a 256 MiB remaining length",
     huge_publish_after_subscribe(b"\x32\xff\xff\xff\x7f"), "exceeds max_packet_size 65536"),
    ("PUBLISH of 70,000 bytes", huge_publish_after_subscribe(b"\x32\xf0\xa2\x04"),
     "exceeds max_packet_size 65536"),
    ("remaining length of five bytes", huge_publish_after_subscribe(b"\x32\xff\xff\xff\xff\x01"),
     "remaining length is longer than 4 bytes"),
])
async def test_malformed_packets_are_reported_and_backed_off(nursery, autojump_clock, name,
                                                             behaviour, reason):
    run = Run(nursery, behaviour)
    steps = await run.run_for(HOUR)
    waits = run.waits()
    assert waits and all(reason in r for _, r in waits), (name, waits[:2])
    assert_backoff_bounds(run)
    assert_no_spin(run, steps, mean_delay=CAPPED_MEAN)
    assert run.client.statistics().connects == (len(run.attempts())
                                                if "PUBLISH" in name or "remaining" in name
                                                else 0)


async def test_huge_publish_is_refused_from_its_header_without_buffering(nursery,
                                                                          autojump_clock):
    run = Run(nursery, huge_publish_after_subscribe(b"\x32\xff\xff\xff\x7f"))
    await run.run_for(60)
    stats = run.client.statistics()
    # Each connection read at most a few KiB before giving up, not 256 MiB.
    assert stats.bytes_down <= len(run.attempts()) * 16 * 1024
    assert stats.messages_received == 0


async def test_server_that_never_answers_connect_times_out_then_backs_off(nursery,
                                                                          autojump_clock):
    run = Run(nursery, never_answers)
    steps = await run.run_for(HOUR)
    attempts = run.attempts()
    waits = run.waits()
    assert all(r == "no CONNACK from mqtt.test:1883 within 10 s" for _, r in waits)
    assert all(r.code == "connection_lost" for _, r in waits)
    # Each wait starts exactly 10 s (the connect timeout) after its attempt.
    for attempt, (t, _) in zip(attempts, waits):
        assert t - attempt == pytest.approx(10.0)
    assert_backoff_bounds(run)
    assert_no_spin(run, steps, mean_delay=CAPPED_MEAN + 10)


async def test_server_that_hangs_up_at_once_follows_the_backoff_schedule(nursery,
                                                                          autojump_clock):
    run = Run(nursery, hangs_up_at_once)
    steps = await run.run_for(HOUR)
    attempts = run.attempts()
    # The client's rng drives only the backoff, so the schedule is exactly reproducible:
    # attempt k+1 comes U(0, min(300, 2^k)) after attempt k (the failure itself takes no time).
    rng = random.Random(SEED)
    expected = [0.0]
    while True:
        t = expected[-1] + BACKOFF.delay(len(expected) - 1, rng)
        if t > HOUR:
            break
        expected.append(t)
    assert attempts == pytest.approx(expected)
    assert all("closed the connection" in r or "connection lost" in r for _, r in run.waits())
    assert 12 <= len(attempts) <= HOUR / CAPPED_MEAN * 2
    assert_no_spin(run, steps, mean_delay=CAPPED_MEAN)


@pytest.mark.parametrize("code, error, check", [
    (1, UnsupportedProtocolVersion, "does not support MQTT 3.1.1 (CONNACK 1)"),
    (2, IdentifierRejected, "rejected the client identifier (CONNACK 2): check client_id"),
    (5, NotAuthorized, "not authorised (CONNACK 5): the server refuses this app key"),
])
async def test_refusals_a_retry_cannot_fix_stop_the_client(nursery, autojump_clock, code, error,
                                                            check):
    run = Run(nursery, refuses_with(code))
    run.permanent = True
    steps = await run.run_for(HOUR)
    # One attempt: retrying cannot fix it. The client stops with a typed error that says
    # what failed and what to check, and its last state change carries it.
    assert len(run.attempts()) == 1 and run.waits() == []
    assert isinstance(run.client.error, error) and run.client.error.return_code == code
    assert check in str(run.client.error)
    last = run.changes[-1]
    assert last[2] is ClientState.CLOSED and last[3].error is run.client.error
    assert len(run.registrar.requests) == 1
    assert_no_spin(run, steps, mean_delay=HOUR)


async def test_server_unavailable_backs_off(nursery, autojump_clock):
    run = Run(nursery, refuses_with(3))
    steps = await run.run_for(HOUR)
    assert all(r == "mqtt.test:1883 is unavailable (CONNACK 3): the broker will be retried"
               and r.code == "server_unavailable" for _, r in run.waits())
    assert_backoff_bounds(run)
    assert len(run.registrar.requests) == 1  # the token is fine: no registration storm
    assert_no_spin(run, steps, mean_delay=CAPPED_MEAN)


async def test_connack_4_registers_again_but_never_storms(nursery, autojump_clock):
    run = Run(nursery, refuses_with(4))
    steps = await run.run_for(HOUR)
    reasons = [r for _, r in run.waits()]
    assert reasons and all(r == "mqtt.test:1883 refused the device token (CONNACK 4); "
                           "registering again" and r.code == "token_rejected" for r in reasons)
    registering = [r for _, _, new, r in run.changes if new is ClientState.REGISTERING]
    assert registering[0] == "no stored registration"
    assert set(registering[1:]) == {"token rejected"}
    # A token fresh from registration that is refused too backs off: one registration per
    # attempt, never several, and the attempts follow the backoff.
    assert len(run.registrar.requests) == len(run.attempts())
    assert_backoff_bounds(run)
    assert_no_spin(run, steps, mean_delay=CAPPED_MEAN)


async def test_connack_4_with_a_stale_token_recovers_at_once(nursery, autojump_clock):
    # A first run stores tok-1; then the server forgets it but accepts the next token:
    # re-registration happens immediately, without a backoff wait.
    accepted = {"tok-1"}

    async def behaviour(conn, stream):
        connect = await _next(conn, stream, Connect)
        ok = connect.password.decode() in accepted
        await stream.send_all(conn.send(ConnAck(0 if ok else 4)))
        if ok:
            subscribe = await _next(conn, stream, Subscribe)
            await stream.send_all(conn.send(SubAck(subscribe.packet_id, (1,))))
        await _drain(stream)

    store = MemoryStateStore()
    registrar = Registrar()
    async with Run(nursery, behaviour, registrar=registrar, state_store=store).client as client:
        await client.wait_connected()
    await trio.sleep(100)
    accepted.clear()
    accepted.add("tok-2")
    run = Run(nursery, behaviour, registrar=registrar, state_store=store)
    started = trio.current_time()
    async with run.client:
        await run.client.wait_connected()
        assert trio.current_time() == started
    assert run.attempts() == [started, started]
    assert registrar.tokens == ["tok-1", "tok-2"]
    assert [(new, reason) for _, _, new, reason in run.changes][:4] == [
        (ClientState.CONNECTING, "connecting to mqtt.test:1883"),
        (ClientState.REGISTERING, "token rejected"),
        (ClientState.CONNECTING, "connecting to mqtt.test:1883"),
        (ClientState.CONNECTED, "connected")]


async def test_a_hostile_registration_endpoint_is_backed_off_too(nursery, autojump_clock):
    # The HTTP side: a body that is not HTTP at all, then a 500, then 403s.
    forbidden = (403, b'{"error": {"code": "forbidden", "message": "app disabled"}}')
    answers = iter([None, (500, b"oops")])

    class Hostile(Registrar):
        async def handle(self, stream):
            answer = next(answers, forbidden)
            if answer is None:
                await stream.receive_some()
                await stream.send_all(b"\x00\xffnot http at all\r\n\r\n")
                await trio.aclose_forcefully(stream)
                return
            self.error = answer
            await super().handle(stream)

    run = Run(nursery, never_answers, registrar=Hostile())
    run.permanent = True
    await run.run_for(HOUR)
    reasons = [r for _, r in run.waits()]
    assert "invalid HTTP response" in reasons[0]
    assert "HTTP 500" in reasons[1]
    # Refused for good (4xx): the client stops with RegistrationRefused at the third try.
    assert len(reasons) == 2 and len(run.registrar.requests) == 2  # (+ the one not HTTP)
    assert isinstance(run.client.error, RegistrationRefused)
    assert run.client.error.code == "forbidden"
    assert "HTTP 403 forbidden: app disabled" in str(run.client.error)
    assert run.attempts() == []  # never got as far as MQTT
