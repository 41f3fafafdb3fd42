from collections.abc import Mapping
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushsdk.heartbeat import (
    FixedStrategy,
    HeartbeatContext,
    HeartbeatStrategy,
    UnknownStrategyError,
    known_strategies,
    parse_strategy,
    register_strategy,
)
from pushsdk.heartbeat import _base

CTX = HeartbeatContext(now=0.0, wall_time=1.7e9, network_key="wifi_home")


@given(st.floats(0.001, 65535))
def test_fixed_is_constant_whatever_happens(seconds):
    s = FixedStrategy(seconds)
    state = s.start(None, CTX)
    for step in (s.on_success, s.on_failure, s.on_success):
        assert s.interval(state, CTX) == seconds
        state = step(state, CTX)
    assert s.max_interval == seconds
    assert s.memory(state) is None


def test_parse_fixed_round_trips_its_name():
    s = parse_strategy("fixed:270")
    assert s == FixedStrategy(270)
    assert s.name == "fixed:270"
    assert parse_strategy(s.name) == s
    assert parse_strategy(" fixed:0.5 ").interval(None, CTX) == 0.5


@pytest.mark.parametrize("spec, words", [
    ("nope", ["unknown heartbeat strategy 'nope'", "known: fixed:<seconds>"]),
    ("fixed", ["fixed:270"]),
    ("fixed:abc", ["not a number"]),
    ("fixed:0", ["(0, 65535]"]),
    ("fixed:70000", ["(0, 65535]"]),
    ("fixed:nan", ["(0, 65535]"]),
    ("mars+hooks+hooks", ["bad heartbeat strategy 'mars+hooks+hooks': +hooks given twice"]),
])
def test_parse_errors_are_clear(spec, words):
    with pytest.raises(UnknownStrategyError) as info:
        parse_strategy(spec)
    assert isinstance(info.value, ValueError)
    for word in words:
        assert word in str(info.value)


def test_strategies_need_the_whole_interface():
    class Incomplete(HeartbeatStrategy):
        name = "x"

    with pytest.raises(TypeError):
        Incomplete()


@pytest.fixture
def clean_registry():
    saved = dict(_base._REGISTRY)
    yield
    _base._REGISTRY.clear()
    _base._REGISTRY.update(saved)


@attrs.frozen
class Doubling(HeartbeatStrategy):
    """A learning strategy: doubles after each success up to 240 s, remembers per network."""

    name = "doubling"
    max_interval = 240.0

    def start(self, memory: Mapping[str, Any] | None, ctx: HeartbeatContext) -> float:
        return memory["interval"] if memory else 30.0

    def interval(self, state: float, ctx: HeartbeatContext) -> float:
        return state

    def on_success(self, state: float, ctx: HeartbeatContext) -> float:
        return min(self.max_interval, state * 2)

    def on_failure(self, state: float, ctx: HeartbeatContext) -> float:
        return 30.0

    def memory(self, state: float) -> Mapping[str, Any]:
        return {"interval": state}


def test_registering_a_strategy_is_one_line(clean_registry):
    register_strategy("doubling", Doubling)
    assert "doubling" in known_strategies()
    s = parse_strategy("doubling")
    assert s == Doubling()
    with pytest.raises(UnknownStrategyError, match="takes no argument"):
        parse_strategy("doubling:5")


def test_decorator_and_simulation_only(clean_registry):
    @register_strategy("oracle-test", usage="oracle-test", simulation_only=True)
    @attrs.frozen
    class Oracle(Doubling):
        pass

    assert "oracle-test" in known_strategies()
    assert "oracle-test" not in known_strategies(include_simulation=False)
    assert isinstance(parse_strategy("oracle-test"), Oracle)


def test_learning_strategy_state_is_passed_in_and_out():
    s = Doubling()
    state = s.start(None, CTX)
    for _ in range(5):
        state = s.on_success(state, CTX)
    assert s.interval(state, CTX) == 240
    assert s.start(s.memory(state), CTX) == 240
    assert s.on_failure(state, CTX) == 30


def test_bad_names_are_refused(clean_registry):
    with pytest.raises(ValueError):
        register_strategy("a:b", Doubling)
