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
    hooked = parse_strategy("fcm+hooks")
    assert hooked.ping_timeout == 60 and hooked.doze_exempt
    for bad in ("+hooks", "nonsense+hooks"):
        with pytest.raises(UnknownStrategyError):
            parse_strategy(bad)


def test_piggyback_after_10_percent_of_the_interval_only():
    hooked = parse_strategy("fixed:600+hooks")
    state = hooked.start(None, ctx())
    assert not hooked.piggyback(state, ctx(), 59.0)
    assert hooked.piggyback(state, ctx(), 60.0)
    assert not hooked.piggyback(state, ctx("wifi"), 359.0)  # Wi-Fi: 60 %, the CPU dominates
    assert hooked.piggyback(state, ctx("wifi"), 360.0)
    assert not parse_strategy("fixed:600").piggyback(None, ctx(), 500.0)


def test_a_ping_as_the_screen_goes_off_like_adaptive():
    hooked = parse_strategy("fixed:600+hooks")
    state = hooked.on_success(hooked.start(None, ctx()), at(100.0, silence=600))
    assert hooked.interval(state, at(400.0, since=399.0)) == 0.0  # just off: ping now
    assert hooked.interval(state, at(400.0, since=390.0)) == 600  # off too long ago
    assert HookedStrategy(parse_strategy("fixed:600"), screen_hints=False).interval(
        state, at(400.0, since=399.0)) == 600
    # The platform says the network is idle: the session left no tail to ride on.
    assert hooked.interval(state, at(400.0, since=399.0, active=False)) == 600


def test_a_free_ping_as_the_screen_comes_on():
    hooked = parse_strategy("fixed:600+hooks")
    state = hooked.on_success(hooked.start(None, ctx()), at(100.0, silence=600))
    on = dict(since=199.0, app="background", net="wifi")
    assert hooked.interval(state, at(200.0, **on)) == 0.0  # 100 s ≥ 10 % of 600 s
    assert hooked.interval(state, at(200.0, since=199.0, net="wifi")) == 600  # off: 60 %
    assert hooked.interval(state, at(155.0, since=154.0, app="foreground")) == 600  # too soon
    assert hooked.interval(state, at(200.0, **on, active=False)) == 600  # the radio is idle


def at(now, since=-1e6, silence=0.0, active=None, app="inactive", net="cellular"):
    return HeartbeatContext(now=now, wall_time=WALL0 + now, network_key="k",
                            network_type=net, app_state=app,
                            app_state_since=since, silence=silence, network_active=active)


def test_an_early_ping_teaches_the_wrapped_strategy_nothing_a_full_one_does():
    hooked = HookedStrategy(MarsStrategy())
    state = hooked.start(None, ctx())
    assert hooked.on_success(state, ctx(silence=100.0)).inner == state.inner
    assert hooked.on_success(state, ctx(silence=210.0)).inner.beats_ok == 1


def test_the_wrapped_trajectory_is_the_strategy_s_own_without_radio_activity():
    plain, hooked = Run(parse_strategy("mars")), Run(parse_strategy("mars+hooks"))
    assert plain.beats(30) == hooked.beats(30)
