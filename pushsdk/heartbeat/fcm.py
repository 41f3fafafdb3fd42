"""``fcm``: the heartbeat of GCM/FCM's connection to Google, as Chromium's GCM client and
Google Play services run it: fixed per network type, server-overridable, exempt from Doze."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ._base import HeartbeatContext, HeartbeatStrategy, register_strategy
from ._params import format_params, parse_params

__all__ = ["FcmStrategy"]

#: ``kCellHeartbeatDefaultMs``: mobile (or unknown) networks.
CELLULAR_INTERVAL = 28 * 60.0
#: ``kWifiHeartbeatDefaultMs``: Wi-Fi (and Ethernet).
WIFI_INTERVAL = 15 * 60.0
#: ``kHeartbeatAckDefaultMs``: how long the heartbeat ack may take.
ACK_TIMEOUT = 60.0
#: ``kMinClientHeartbeatIntervalMs``: the shortest interval a client may ask for.
MIN_CLIENT_INTERVAL = 30.0

_DEFAULTS = {"cellular": CELLULAR_INTERVAL, "wifi": WIFI_INTERVAL, "server": 0.0,
             "ack": ACK_TIMEOUT}


@register_strategy("fcm")
@attrs.frozen
class FcmStrategy(HeartbeatStrategy):
    """Google's platform push heartbeat: 28 min on cellular, 15 min on Wi-Fi (or the server's
    interval), nothing learned, exempt from Doze.

    Rules (Chromium ``google_apis/gcm/engine/heartbeat_manager.cc``, ``HeartbeatManager``):

    - The interval is ``kCellHeartbeatDefaultMs`` (28 min) on mobile or unknown networks and
      ``kWifiHeartbeatDefaultMs`` (15 min) on Wi-Fi/Ethernet (``GetDefaultHeartbeatInterval``).
    - A client may configure its own interval of at least 30 s
      (``SetClientHeartbeatIntervalMs``, ``kMinClientHeartbeatIntervalMs``): ``cellular=``,
      ``wifi=``; and the server may override it (``UpdateHeartbeatConfig`` with the login
      response's ``HeartbeatConfig.interval_ms``): ``server=`` (0 = no override).
    - The ack must arrive within ``kHeartbeatAckDefaultMs`` (60 s): ``ack=``.
    - Successes and failures change nothing; nothing is remembered per network.

    Doze: on Android this connection belongs to Google Play services, which the platform
    whitelists (``allow-in-power-save`` for ``com.google.android.gms`` in the device's
    sysconfig, read by ``DeviceIdleController``): its network is not cut in Doze and its
    heartbeat alarm is allowed while idle. ``doze_exempt`` tells the SDK and the simulated
    handset so; an ordinary app cannot claim it (it is a property of the platform's own push
    connection, which is what this baseline models).
    """

    cellular: float = CELLULAR_INTERVAL
    wifi: float = WIFI_INTERVAL
    server: float = 0.0
    ack: float = ACK_TIMEOUT

    doze_exempt = True

    def __attrs_post_init__(self) -> None:
        for key in ("cellular", "wifi"):
            if getattr(self, key) < MIN_CLIENT_INTERVAL:
                raise ValueError(f"{key} must be at least {MIN_CLIENT_INTERVAL:g} s "
                                 "(kMinClientHeartbeatIntervalMs)")
        if self.server and self.server < 1.0:
            raise ValueError("server must be 0 (no override) or at least 1 s")
        if self.ack <= 0:
            raise ValueError("ack must be > 0")

    @classmethod
    def from_spec(cls, arg: str | None) -> FcmStrategy:
        return cls(**parse_params(arg, {key: float for key in _DEFAULTS}))

    @property
    def name(self) -> str:
        return format_params("fcm", attrs.asdict(self), _DEFAULTS)

    @property
    def ping_timeout(self) -> float:  # type: ignore[override]
        return self.ack

    @property
    def max_interval(self) -> float:
        return self.server or max(self.cellular, self.wifi)

    def start(self, memory: Mapping[str, Any] | None, ctx: HeartbeatContext) -> None:
        return None

    def interval(self, state: None, ctx: HeartbeatContext) -> float:
        if self.server:
            return self.server
        return self.cellular if ctx.network_type == "cellular" else self.wifi
