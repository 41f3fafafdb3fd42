"""SimulationClock: MockClock(autojump_threshold=0) semantics in one pass per instant, timers."""
import math

import pytest
import trio
import trio.testing

from simulator.simclock import SimulationClock, current_simulation_clock


class PassCounter(trio.abc.Instrument):
    """Counts trio run-loop passes (one I/O wait each)."""

    def __init__(self) -> None:
        self.passes = 0

    def before_io_wait(self, timeout: float) -> None:
        self.passes += 1


async def _mixed_program(log: list) -> None:
    """Sleeps, timeouts, events and tasks waking each other at shared and distinct instants."""
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

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper, "a", [1.0, 2.5, 0.0, 4.0])
        nursery.start_soon(sleeper, "b", [3.5, 0.25, 100.0])
        nursery.start_soon(waiter)
        await trio.sleep(12.0)
        event.set()
    log.append((trio.current_time(), "end"))


def test_the_same_program_sees_the_same_times_as_under_mockclock():
    logs = {}
    for name, clock in (("mock", trio.testing.MockClock(autojump_threshold=0)),
                        ("sim", SimulationClock())):
        log: list = []
        trio.run(_mixed_program, log, clock=clock)
        logs[name] = sorted(log, key=repr)
    assert logs["sim"] == logs["mock"]
    assert max(entry[0] for entry in logs["sim"]) == 3.5 + 0.25 + 100.0


def test_each_virtual_instant_costs_one_scheduler_pass_not_two():
    async def ticker():
        for _ in range(100):
            await trio.sleep(1.5)

    passes = {}
    for name, clock in (("mock", trio.testing.MockClock(autojump_threshold=0)),
                        ("sim", SimulationClock())):
        counter = PassCounter()
        trio.run(ticker, clock=clock, instruments=[counter])
        passes[name] = counter.passes
    # MockClock spends one pass finding nothing to do and jumping, one running the task.
    assert 100 <= passes["sim"] <= 110  # a few more to start and end the run
    assert 200 <= passes["mock"] <= 210


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


def test_timers_fire_at_their_time_in_order_ties_first_in_first_out():
    fired = []

    async def main():
        clock = current_simulation_clock()
        for when, name in ((3.0, "c1"), (1.0, "a"), (3.0, "c2"), (2.0, "b"), (3.0, "c3")):
            clock.call_at(when, lambda name=name: fired.append((clock.current_time(), name)))
        cancelled = clock.call_at(2.5, lambda: fired.append("cancelled"))
        cancelled.cancel()
        assert not cancelled.pending
        await trio.sleep(10.0)

    trio.run(main, clock=SimulationClock())
    assert fired == [(1.0, "a"), (2.0, "b"), (3.0, "c1"), (3.0, "c2"), (3.0, "c3")]


def test_a_timer_wakes_a_parked_task_at_its_time_without_a_deadline():
    async def main():
        clock = current_simulation_clock()
        task = trio.lowlevel.current_task()
        timer = clock.call_at(42.0, lambda: trio.lowlevel.reschedule(task))
        assert timer.pending
        await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        assert trio.current_time() == 42.0
        assert not timer.pending
        # A timer due now (or in the past) fires in the next pass, time unchanged.
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

    trio.run(main, clock=SimulationClock())
    assert order[0] == "timer"
    assert sorted(order[1:]) == [("parked", 5.0), ("sleeper", 5.0)]


def test_nan_timers_are_refused_and_deadlock_is_reported_as_forever():
    clock = SimulationClock()
    with pytest.raises(ValueError):
        clock.call_at(math.nan, lambda: None)
    assert clock.deadline_to_sleep_time(math.inf) > 86400
    assert clock.current_time() == 0.0


def test_simulated_links_refuse_another_clock_with_a_clear_error():
    async def main():
        current_simulation_clock()

    with pytest.raises(RuntimeError, match="SimulationClock"):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
