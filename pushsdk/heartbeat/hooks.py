"""``<strategy>+hooks``: any strategy with the platform hooks ``adaptive`` uses.

``mars+hooks``, ``fixed:270+hooks``, ``courier:max=1800+hooks``, ... run the named strategy
unchanged and add **piggybacking**: when the platform reports the radio active for another
app (``PushClient.notify_radio_active``, Android's ``OnNetworkActiveListener``), a ping goes
out early — on cellular only, once ``piggyback_after`` of the interval has passed — because
it then lands in the radio's tail and costs a fraction of a wake-up. A ping sent early tests
less silence than the interval, so its answer is *not* passed to the wrapped strategy (it
proves nothing about the NAT); its failure is, since a shorter silence failed.

Probe connections are not added: a strategy whose source searches on a second connection
has that in its own rules (``courier``); Mars and Kontalk search in-band by design. The
comparison "as published" vs "same hooks" is therefore ``X`` vs ``X+hooks``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ._base import HeartbeatContext, HeartbeatStrategy

__all__ = ["HOOKS_SUFFIX", "HookedStrategy"]

HOOKS_SUFFIX = "+hooks"
#: A ping answered after less than this share of its interval was sent early.
_FULL_SILENCE = 0.99


@attrs.frozen
class HookedStrategy(HeartbeatStrategy):
    """``inner`` plus piggybacking on other apps' radio wake-ups (see the module docstring)."""

    inner: HeartbeatStrategy
    piggyback_after: float = 0.3  # as adaptive: a free ping once 30 % of the interval passed

    @property
    def name(self) -> str:
        return self.inner.name + HOOKS_SUFFIX

    @property
    def max_interval(self) -> float:
        return self.inner.max_interval

    @property  # type: ignore[override]
    def ping_timeout(self) -> float | None:
        return self.inner.ping_timeout

    @property  # type: ignore[override]
    def doze_exempt(self) -> bool:
        return self.inner.doze_exempt

    def start(self, memory: Mapping[str, Any] | None, ctx: HeartbeatContext) -> Any:
        return self.inner.start(memory, ctx)

    def interval(self, state: Any, ctx: HeartbeatContext) -> float:
        return self.inner.interval(state, ctx)

    def on_success(self, state: Any, ctx: HeartbeatContext) -> Any:
        if ctx.silence < _FULL_SILENCE * self.inner.interval(state, ctx):
            return state  # a piggybacked ping: says nothing about the NAT
        return self.inner.on_success(state, ctx)

    def on_failure(self, state: Any, ctx: HeartbeatContext) -> Any:
        return self.inner.on_failure(state, ctx)

    def memory(self, state: Any) -> Mapping[str, Any] | None:
        return self.inner.memory(state)

    def reply_timeout(self, state: Any, ctx: HeartbeatContext) -> float | None:
        return self.inner.reply_timeout(state, ctx)

    def probe(self, state: Any, ctx: HeartbeatContext) -> float | None:
        return self.inner.probe(state, ctx)

    def on_probe(self, state: Any, ctx: HeartbeatContext, ok: bool | None) -> Any:
        return self.inner.on_probe(state, ctx, ok)

    def piggyback(self, state: Any, ctx: HeartbeatContext, silence: float) -> bool:
        if self.inner.piggyback(state, ctx, silence):
            return True
        return (ctx.network_type == "cellular"
                and silence >= self.piggyback_after * self.inner.interval(state, ctx))
