"""``<strategy>+hooks``: any strategy with the platform hooks ``adaptive`` uses.

``mars+hooks``, ``fixed:270+hooks``, ``courier:max=1800+hooks``, ... run the named strategy
unchanged and add the **free beats** ``adaptive`` takes: when the platform reports the radio
active for another app (``PushClient.notify_radio_active``, Android's
``OnNetworkActiveListener``), a ping goes out early once ``piggyback_after`` of the interval
has passed, because it then lands in the radio's tail and costs a fraction of a wake-up; and
with ``screen_hints`` a ping goes out the moment the screen comes on or goes off (the app in
front keeps the radio up, docs/energy.md), unless the platform says the network is idle
(``HeartbeatContext.network_active``). A ping sent early tests less silence
than the interval, so its answer is *not* passed to the wrapped strategy (it proves nothing
about the NAT); its failure is, since a shorter silence failed.

Probe connections are not added: a strategy whose source searches on a second connection
has that in its own rules (``courier``); Mars and Kontalk search in-band by design. The
comparison "as published" vs "same hooks" is therefore ``X`` vs ``X+hooks``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

import math

from ._base import HeartbeatContext, HeartbeatStrategy

__all__ = ["HOOKS_SUFFIX", "HookedState", "HookedStrategy"]

HOOKS_SUFFIX = "+hooks"
#: A ping answered after less than this share of its interval was sent early.
_FULL_SILENCE = 0.99
#: The screen changed this recently: a session's radio is still up.
_SCREEN_TAIL_S = 2.0


@attrs.frozen
class HookedState:
    """The wrapped strategy's state and when a ping was last answered (not remembered)."""

    inner: Any
    last_ping_at: float = -math.inf


def screen_just_changed(ctx: HeartbeatContext, last_ping_at: float, interval: float,
                        share: float) -> bool:
    """The screen came on or went off (or the app came to or left the front) after the last
    answered ping, moments ago, and ``share`` of the interval has passed since that ping.

    Screen on: the CPU is awake for the app in front, which holds the radio up, so a ping
    costs next to nothing. Screen off: the session's radio tail is still running, so a ping
    costs a CPU wake-up but no radio promotion. Unless the platform says otherwise: where it
    answers ``network_active`` and the answer is False, the app in front sent nothing, and a
    ping now would pay a whole wake-up."""
    return (ctx.app_state_since > last_ping_at > -math.inf
            and ctx.now - ctx.app_state_since < _SCREEN_TAIL_S
            and ctx.now - last_ping_at >= share * interval
            and ctx.network_active is not False)


def screen_share(ctx: HeartbeatContext, share: float, share_wifi: float) -> float:
    """The share of the interval after which a screen change is worth a ping: ``share`` with
    the screen on (the ping is free); once it is off, the piggyback share of the network
    (on Wi-Fi the CPU wake-up it still costs is most of a beat)."""
    if ctx.app_state != "inactive" or ctx.network_type != "wifi":
        return share
    return share_wifi


@attrs.frozen
class HookedStrategy(HeartbeatStrategy):
    """``inner`` plus free beats on other apps' radio use (see the module docstring)."""

    inner: HeartbeatStrategy
    piggyback_after: float = 0.1  # as adaptive: a free ping once 10 % of the interval passed
    piggyback_after_wifi: float = 0.6  # as adaptive: on Wi-Fi the CPU's wake dominates
    screen_hints: bool = True

    @property
    def name(self) -> str:
        return self.inner.name + HOOKS_SUFFIX

    @property
    def max_interval(self) -> float:
        return self.inner.max_interval

    @property
    def ping_timeout(self) -> float | None:  # type: ignore[override]
        return self.inner.ping_timeout

    @property
    def doze_exempt(self) -> bool:  # type: ignore[override]
        return self.inner.doze_exempt

    def start(self, memory: Mapping[str, Any] | None, ctx: HeartbeatContext) -> HookedState:
        return HookedState(self.inner.start(memory, ctx))

    def interval(self, state: HookedState, ctx: HeartbeatContext) -> float:
        interval = self.inner.interval(state.inner, ctx)
        if self.screen_hints and screen_just_changed(
                ctx, state.last_ping_at, interval,
                screen_share(ctx, self.piggyback_after, self.piggyback_after_wifi)):
            return 0.0
        return interval

    def on_success(self, state: HookedState, ctx: HeartbeatContext) -> HookedState:
        state = attrs.evolve(state, last_ping_at=ctx.now)
        if ctx.silence < _FULL_SILENCE * self.inner.interval(state.inner, ctx):
            return state  # an early ping: says nothing about the NAT
        return attrs.evolve(state, inner=self.inner.on_success(state.inner, ctx))

    def on_failure(self, state: HookedState, ctx: HeartbeatContext) -> HookedState:
        return attrs.evolve(state, inner=self.inner.on_failure(state.inner, ctx))

    def memory(self, state: HookedState) -> Mapping[str, Any] | None:
        return self.inner.memory(state.inner)

    def reply_timeout(self, state: HookedState, ctx: HeartbeatContext) -> float | None:
        return self.inner.reply_timeout(state.inner, ctx)

    def probe(self, state: HookedState, ctx: HeartbeatContext) -> float | None:
        return self.inner.probe(state.inner, ctx)

    def on_probe(self, state: HookedState, ctx: HeartbeatContext,
                 ok: bool | None) -> HookedState:
        return attrs.evolve(state, inner=self.inner.on_probe(state.inner, ctx, ok))

    def piggyback(self, state: HookedState, ctx: HeartbeatContext, silence: float) -> bool:
        if self.inner.piggyback(state.inner, ctx, silence):
            return True
        return silence >= self._share(ctx) * self.inner.interval(state.inner, ctx)

    def _share(self, ctx: HeartbeatContext) -> float:
        return self.piggyback_after_wifi if ctx.network_type == "wifi" else self.piggyback_after
