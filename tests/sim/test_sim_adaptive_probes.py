"""``adaptive`` end to end: the real SDK probes the NAT on a second connection through the
simulated network, the reference server answers probes, the main connection never fails."""
import pytest

from simulator.simclock import SimulationClock
from simulator.world import RunConfig, World, run_world
from simworld import one_network, pushes

import trio


@pytest.mark.parametrize("nat", [300, 1800])
def test_probes_learn_the_nat_without_a_single_failed_heartbeat(nat):
    [result] = run_world(RunConfig(one_network(nat=nat, workload=pushes(48)), "adaptive", 1, 12))
    assert result.heartbeats_failed == 0 and result.reconnects == 0
    assert result.dead_s == 0
    assert result.pushes_delivered == result.pushes_sent > 0
    # Learned: the beats in the last hours come at ≥ 90 % of the NAT timeout.
    assert result.heartbeats < 12 * 3600 / (0.9 * nat) * 1.6


def test_the_server_answers_probes_and_the_sdk_counts_them():
    scenario = one_network(nat=1800)
    seen = {}

    async def main():
        world = World(RunConfig(scenario, "adaptive", 1, 6))
        async with trio.open_nursery() as nursery:
            async def peek():
                await trio.sleep(6 * 3600 - 1)
                seen["server"] = world.server.statistics()
                seen["client"] = world.handsets[0].client.statistics()
            nursery.start_soon(peek)
            await world.run()

    trio.run(main, clock=SimulationClock())
    assert seen["server"].mqtt_probes == seen["client"].probes >= 4
    assert seen["client"].heartbeats_failed == 0
    assert seen["client"].heartbeat_interval == pytest.approx(1755, abs=60)
