"""``<strategy>+hooks``: the same strategy plus piggybacking; early pings teach it nothing."""
import pytest

from heartbeat_run import WALL0, Run
from pushsdk.heartbeat import HeartbeatContext, UnknownStrategyError, parse_strategy
from pushsdk.heartbeat.hooks import HookedStrategy
from pushsdk.heartbeat.mars import MarsStrategy


def ctx(network_type="cellular", silence=0.0):
    return HeartbeatContext(now=0.0, wall_time=WALL0, network_key="k",
                            network_type=network_type, app_state="inactive",
                            app_state_since=-1e6, silence=silence)


def test_hooks_wrap_any_strategy_and_keep_its_name_and_bounds():
    hooked = parse_strategy("courier:max=1800+hooks")
    assert isinstance(hooked, HookedStrategy)
    assert hooked.name == "courier:max=1800+hooks" and parse_strategy(hooked.name) == hooked
    assert hooked.max_interval == hooked.inner.max_interval == 1800
    assert parse_strategy("fcm+hooks").ping_timeout == 60 and parse_strategy("fcm+hooks").doze_exempt
    for bad in ("+hooks", "nonsense+hooks"):
        with pytest.raises(UnknownStrategyError):
            parse_strategy(bad)


def test_piggyback_on_cellular_after_30_percent_of_the_interval_only():
    hooked = parse_strategy("fixed:600+hooks")
    assert not hooked.piggyback(None, ctx(), 179.0)
    assert hooked.piggyback(None, ctx(), 180.0)
    assert not hooked.piggyback(None, ctx("wifi"), 500.0)
    assert not parse_strategy("fixed:600").piggyback(None, ctx(), 500.0)


def test_an_early_ping_teaches_the_wrapped_strategy_nothing_a_full_one_does():
    hooked = HookedStrategy(MarsStrategy())
    state = hooked.start(None, ctx())
    assert hooked.on_success(state, ctx(silence=100.0)) == state
    assert hooked.on_success(state, ctx(silence=210.0)).beats_ok == 1


def test_the_wrapped_trajectory_is_the_strategy_s_own_without_radio_activity():
    plain, hooked = Run(parse_strategy("mars")), Run(parse_strategy("mars+hooks"))
    assert plain.beats(30) == hooked.beats(30)
