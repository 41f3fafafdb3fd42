"""``fcm``: the fixed per-network-type heartbeat of GCM/FCM's connection to Google."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ._base import HeartbeatContext, HeartbeatStrategy, register_strategy

__all__ = ["FcmStrategy"]

#: ``kCellHeartbeatDefaultMs``: mobile (or unknown) networks.
CELLULAR_INTERVAL = 28 * 60.0
#: ``kWifiHeartbeatDefaultMs``: Wi-Fi (and Ethernet).
WIFI_INTERVAL = 15 * 60.0
#: ``kHeartbeatAckDefaultMs``: how long the heartbeat ack may take.
ACK_TIMEOUT = 60.0


@register_strategy("fcm")
@attrs.frozen
class FcmStrategy(HeartbeatStrategy):
    """Google's platform push heartbeat: 28 min on cellular, 15 min on Wi-Fi, nothing learned.

    Rules: the interval depends only on ``ctx.network_type`` (28 min cellular, 15 min Wi-Fi);
    the ack (PINGRESP) must arrive within 60 s; successes and failures change nothing and
    nothing is remembered per network.

    Source: Chromium ``google_apis/gcm/engine/heartbeat_manager.cc`` (``kCellHeartbeatDefaultMs``,
    ``kWifiHeartbeatDefaultMs``, ``kHeartbeatAckDefaultMs``). Not modelled: the GCM server may
    override the interval, and a client may configure one of at least 30 s.
    """

    ping_timeout = ACK_TIMEOUT

    @property
    def name(self) -> str:
        return "fcm"

    @property
    def max_interval(self) -> float:
        return CELLULAR_INTERVAL

    def start(self, memory: Mapping[str, Any] | None, ctx: HeartbeatContext) -> None:
        return None

    def interval(self, state: None, ctx: HeartbeatContext) -> float:
        return CELLULAR_INTERVAL if ctx.network_type == "cellular" else WIFI_INTERVAL
