"""SimulationClock: MockClock(autojump_threshold=0) semantics within trio's Clock contract."""
import math
import pathlib
import re
import threading

import pytest
import trio
import trio.testing

from simulator import simclock
from simulator.scenario import Scenario
from simulator.simclock import SimulationClock, current_simulation_clock
from simulator.world import RunConfig, World, run_world


class PassCounter(trio.abc.Instrument):
    """Counts trio run-loop passes (one I/O wait each)."""

    def __init__(self) -> None:
        self.passes = 0

    def before_io_wait(self, timeout: float) -> None:
        self.passes += 1


async def _mixed_program(log: list) -> None:
    """Sleeps, timeouts, events, tasks waking each other at shared and distinct instants,
    and a task that waits for every other task to block and then acts at that instant."""
    event = trio.Event()

    async def sleeper(name: str, delays: list[float]) -> None:
        for delay in delays:
            await trio.sleep(delay)
            log.append((trio.current_time(), name))

    async def waiter() -> None:
        with trio.move_on_after(7.5) as scope:
            await event.wait()
        log.append((trio.current_time(), "waiter", scope.cancelled_caught))
        await event.wait()
        log.append((trio.current_time(), "waiter woke"))

    async def idle_watcher() -> None:
        # Under MockClock a task in wait_all_tasks_blocked wakes *before* the clock jumps,
        # and what it starts then (a 0.1 s sleep, earlier than anything else pending)
        # comes first.
        for _ in range(4):
            await trio.testing.wait_all_tasks_blocked()
            log.append((trio.current_time(), "idle"))
            await trio.sleep(0.1)
            log.append((trio.current_time(), "after idle"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper, "a", [1.0, 2.5, 0.0, 4.0])
        nursery.start_soon(sleeper, "b", [3.5, 0.25, 100.0])
        nursery.start_soon(waiter)
        nursery.start_soon(idle_watcher)
        await trio.sleep(12.0)
        event.set()
    log.append((trio.current_time(), "end"))


def test_the_same_program_sees_the_same_times_as_under_mockclock():
    # Several runs: trio orders each batch at random, and a driver that moved time before
    # the idle watcher ran (woken in the same batch) would show in some of them.
    mock: list = []
    trio.run(_mixed_program, mock, clock=trio.testing.MockClock(autojump_threshold=0))
    expected = sorted(mock, key=repr)
    assert expected[:2] == [(0.0, "idle"), (0.1, "after idle")]
    assert max(entry[0] for entry in expected) == 3.5 + 0.25 + 100.0
    for _ in range(20):
        log: list = []
        simclock.run(_mixed_program, log)
        assert sorted(log, key=repr) == expected


def test_virtual_time_jumps_once_per_distinct_instant():
    async def ticker():
        for _ in range(100):
            await trio.sleep(1.5)

    clock = SimulationClock()
    counter = PassCounter()
    simclock.run(ticker, clock=clock, instruments=[counter])
    assert clock.current_time() == 150.0
    assert clock.jumps == 100
    # One pass to notice that every task is blocked (the driver moves time), one to run
    # the ticker: the price of moving time from a task, as MockClock pays it too.
    assert 200 <= counter.passes <= 210


def test_time_stands_still_while_any_task_can_run():
    async def main():
        clock = current_simulation_clock()
        seen = set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep, 5.0)  # a pending deadline to jump to
            for _ in range(1000):
                await trio.lowlevel.checkpoint()
                seen.add(clock.current_time())
            assert seen == {0.0}
        assert trio.current_time() == 5.0

    trio.run(main, clock=SimulationClock())


def test_the_clock_methods_only_answer_questions():
    """trio.abc.Clock's contract: deadline_to_sleep_time computes a sleep time; it moves
    no time and fires no timer (the driver does both, from a task)."""
    clock = SimulationClock()
    fired = []
    clock.call_at(0.0, lambda: fired.append("due"))
    clock.call_at(3.0, lambda: fired.append("later"))
    assert clock.deadline_to_sleep_time(5.0) == pytest.approx(999_999_999.0)
    assert clock.deadline_to_sleep_time(0.0) == 0.0
    assert clock.deadline_to_sleep_time(math.inf) > 86400
    assert clock.current_time() == 0.0
    assert fired == []


def test_timers_fire_in_the_driver_task_at_their_time_ties_first_in_first_out():
    fired = []

    async def main():
        clock = current_simulation_clock()
        for when, name in ((3.0, "c1"), (1.0, "a"), (3.0, "c2"), (2.0, "b"), (3.0, "c3")):
            def callback(name=name):
                task = trio.lowlevel.current_task()  # task context: trio's API works
                fired.append((trio.current_time(), name, task.name))
            clock.call_at(when, callback)
        cancelled = clock.call_at(2.5, lambda: fired.append("cancelled"))
        cancelled.cancel()
        assert not cancelled.pending
        await trio.sleep(10.0)

    simclock.run(main)
    driver = "simulator.simclock driver"
    assert fired == [(1.0, "a", driver), (2.0, "b", driver), (3.0, "c1", driver),
                     (3.0, "c2", driver), (3.0, "c3", driver)]


def test_a_timer_wakes_a_parked_task_at_its_time_without_a_deadline():
    async def main():
        clock = current_simulation_clock()
        task = trio.lowlevel.current_task()
        timer = clock.call_at(42.0, lambda: trio.lowlevel.reschedule(task))
        assert timer.pending
        await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        assert trio.current_time() == 42.0
        assert not timer.pending
        # A timer due now (or in the past) fires once every task blocks, time unchanged.
        clock.call_at(40.0, lambda: trio.lowlevel.reschedule(task))
        await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        assert trio.current_time() == 42.0

    trio.run(main, clock=SimulationClock())


def test_a_timer_and_a_deadline_at_one_instant_run_in_one_pass():
    order = []

    async def main():
        clock = current_simulation_clock()
        task = trio.lowlevel.current_task()
        clock.call_at(5.0, lambda: order.append("timer"))
        async with trio.open_nursery() as nursery:
            async def sleeper():
                await trio.sleep_until(5.0)
                order.append(("sleeper", trio.current_time()))
            nursery.start_soon(sleeper)
            clock.call_at(5.0, lambda: trio.lowlevel.reschedule(task))
            await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
            order.append(("parked", trio.current_time()))

    simclock.run(main)
    assert order[0] == "timer"
    assert sorted(order[1:]) == [("parked", 5.0), ("sleeper", 5.0)]


def test_nan_timers_are_refused():
    clock = SimulationClock()
    with pytest.raises(ValueError):
        clock.call_at(math.nan, lambda: None)


def test_a_deadlock_waits_without_spinning_and_resumes_when_woken_from_outside():
    """With nothing due, virtual time has nowhere to go: the driver checks again a real
    fraction of a second later instead of looping, and carries on once something outside
    the run (here a thread) wakes a task."""
    counter = PassCounter()

    async def main():
        current_simulation_clock()
        token = trio.lowlevel.current_trio_token()
        woken = trio.Event()
        threading.Timer(0.3, lambda: token.run_sync_soon(woken.set)).start()
        await woken.wait()  # no deadline, no timer: deadlocked in virtual time
        assert trio.current_time() == 0.0
        await trio.sleep(7.0)
        return trio.current_time()

    assert trio.run(main, clock=SimulationClock(), instruments=[counter]) == 7.0
    assert counter.passes < 40  # a spinning driver would take hundreds of thousands


def test_the_simulation_clock_is_refused_to_a_run_under_another_clock():
    async def main():
        current_simulation_clock()

    with pytest.raises(RuntimeError, match="SimulationClock"):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_world_gives_the_same_results_under_trio_mockclock():
    """The whole simulation (server, SDK, links, NAT, Doze, radio) under trio's own
    MockClock(autojump_threshold=0), whose timers a task keeps (``TaskTimers``), equals
    the run under SimulationClock to the last bit."""
    config = RunConfig(Scenario.builtin("mixed"), "mars", handsets=6, hours=3, seed=5)
    expected = run_world(config)
    got = trio.run(World(config).run, clock=trio.testing.MockClock(autojump_threshold=0))
    assert got == expected
    assert sum(r.heartbeats for r in got) > 100


def test_the_simulator_uses_no_private_trio_api():
    root = pathlib.Path(__file__).resolve().parents[2]
    private = re.compile(r"\btrio\.(?:\w+\.)*_\w+|from trio\.?\w* import _|trio\._")
    offenders = [
        f"{path.relative_to(root)}:{n}"
        for path in sorted((root / "simulator").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert offenders == []
