"""Server mode's decisions about registration, as plain functions of the configuration and
the stored state (the client does the state changes, saving and callbacks around them)."""
from __future__ import annotations

from collections.abc import Callable

import attrs

from .config import ServerConfig
from .identity import DeviceKey
from .registration import Registration, register
from .state import SdkState
from .transport import Connector
from .webpush import WebPushKeys

__all__ = ["profile_changes", "register_again", "registration_reason"]


def registration_reason(cfg: ServerConfig, state: SdkState, now: float,
                        token_rejected: bool) -> str | None:
    """Why the device must register now (``now`` in Unix seconds), or None if the stored
    registration will do."""
    reg = state.registration
    if reg is None or not reg.is_for(cfg.server_url, cfg.app_key, cfg.device_id):
        return "no stored registration"
    if token_rejected:
        return "token rejected"
    if reg.token_expired(now, cfg.token_refresh_margin):
        return "token expired"
    if cfg.e2e and state.webpush_keys is None:
        return "end-to-end keys not registered yet"
    return None


async def register_again(cfg: ServerConfig, state: SdkState, connector: Connector, *,
                         timeout: float,
                         on_traffic: Callable[[int, int], None] | None) -> SdkState:
    """Register with the installation's device key (made now if there is none) and, as
    proof, the stored token of the same device; the state with the new registration."""
    old = state.registration
    same_device = old is not None and old.is_for(cfg.server_url, cfg.app_key, cfg.device_id)
    keys = state.webpush_keys
    if cfg.e2e and (keys is None or not same_device):
        keys = WebPushKeys.generate()  # a new identity gets keys of its own (unlinkable)
    device_key = state.device_key or DeviceKey.generate()
    new = await register(
        connector, cfg.server_url, cfg.app_key, cfg.device_id,
        platform=cfg.platform, alias=cfg.alias, tags=cfg.tags,
        webpush=keys.subscription() if cfg.e2e and keys else None,
        device_key=device_key,
        proof_token=old.token if same_device and old is not None else None,
        timeout=timeout, on_traffic=on_traffic,
    )
    return attrs.evolve(state.with_registration(new), webpush_keys=keys,
                        device_key=device_key)


def profile_changes(cfg: ServerConfig,
                    reg: Registration) -> tuple[str | None, tuple[str, ...] | None] | None:
    """``(alias, tags)`` to send (None for one that is fine) when the config's differ from
    what the server may hold; None if nothing needs sending."""
    alias = cfg.alias if cfg.alias is not None and (
        not reg.profile_known or reg.alias != cfg.alias) else None
    tags = cfg.tags if cfg.tags is not None and (
        not reg.profile_known or reg.tags != cfg.tags) else None
    if alias is None and tags is None:
        return None
    return alias, tags
