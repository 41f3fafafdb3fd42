"""Leave the target as it was: remove the sessions and devices a run created.

- Broker mode, persistent sessions (clean session 0): the broker keeps each client's session
  (subscriptions, queued messages) after it disconnects, forever by default. For every
  client id of the run — handsets and publishers — connect once with clean session 1 and
  DISCONNECT, which discards it (MQTT 3.1.1 §3.1.2.4; in 5.0 Clean Start 1 and a Session
  Expiry Interval of 0, §3.1.2.11.2).
- Server mode: ``DELETE /v1/devices/<registration_id>`` with the app's master secret for
  every device the run registered (a server without that API is reported, not an error).

Bounded: at most :data:`CLEANUP_PARALLEL` at once and :data:`CLEANUP_TIMEOUT_S` overall;
what could not be cleaned is counted in the results.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from pushsdk.protocol import Disconnect
from pushsdk.transport import TcpConnector, TransportError

from .plan import BrokerTarget, FleetPlan, ServerTarget
from .publisher import PushFailed, mqtt_session
from .senders import HttpClient, HttpError, delete_device

__all__ = ["CLEANUP_PARALLEL", "CLEANUP_TIMEOUT_S", "clean_up"]

CLEANUP_PARALLEL = 32
CLEANUP_TIMEOUT_S = 60.0


async def clean_up(plan: FleetPlan, client_ids: Sequence[str],
                   registration_ids: Sequence[str]) -> dict[str, Any]:
    """Remove what the run left on the target; returns counts for the results."""
    outcome: dict[str, Any] = {"cleaned": 0, "failed": 0, "skipped": 0, "reason": ""}
    connector = TcpConnector(ca_file=plan.ca_file, connect_timeout=plan.connect_timeout)
    with trio.move_on_after(CLEANUP_TIMEOUT_S) as scope:
        if isinstance(plan.target, BrokerTarget):
            await _parallel(client_ids, lambda cid: _forget_session(connector, plan, cid),
                            outcome)
        elif isinstance(plan.target, ServerTarget) and registration_ids:
            await _delete_devices(connector, plan, registration_ids, outcome)
    if scope.cancelled_caught:
        outcome["reason"] = f"clean-up stopped after {CLEANUP_TIMEOUT_S:g} s"
    outcome["skipped"] = (len(client_ids) if isinstance(plan.target, BrokerTarget)
                          else len(registration_ids)) - outcome["cleaned"] - outcome["failed"]
    return outcome


async def _parallel(items: Sequence[Any], work: Any, outcome: dict[str, Any]) -> None:
    limit = trio.CapacityLimiter(CLEANUP_PARALLEL)

    async def one(item: Any) -> None:
        async with limit:
            try:
                await work(item)
            except (TransportError, OSError, PushFailed, HttpError) as exc:
                outcome["failed"] += 1
                outcome["reason"] = outcome["reason"] or str(exc)
            else:
                outcome["cleaned"] += 1

    async with trio.open_nursery() as nursery:
        for item in items:
            nursery.start_soon(one, item)


async def _forget_session(connector: TcpConnector, plan: FleetPlan, client_id: str) -> None:
    assert isinstance(plan.target, BrokerTarget)
    # Clean start with (5.0) no Session Expiry Interval: the session ends with this
    # connection.
    link, _ = await mqtt_session(connector, plan.target, client_id, clean=True,
                                 timeout=plan.connect_timeout, version=plan.mqtt_level)
    try:
        await link.send(Disconnect())
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        await link.close()


async def _delete_devices(connector: TcpConnector, plan: FleetPlan,
                          registration_ids: Sequence[str], outcome: dict[str, Any]) -> None:
    target = plan.target
    assert isinstance(target, ServerTarget)
    clients = [HttpClient(connector, target.url) for _ in range(4)]
    lanes: list[list[str]] = [list(registration_ids[n::len(clients)]) for n in range(len(clients))]
    unsupported = False

    async def lane(client: HttpClient, ids: list[str]) -> None:
        nonlocal unsupported
        for registration_id in ids:
            if unsupported:
                return
            try:
                if await delete_device(client, target, registration_id):
                    outcome["cleaned"] += 1
                else:
                    unsupported = True
            except (HttpError, PushFailed) as exc:
                outcome["failed"] += 1
                outcome["reason"] = outcome["reason"] or str(exc)
        await client.aclose()

    async with trio.open_nursery() as nursery:
        for client, ids in zip(clients, lanes):
            nursery.start_soon(lane, client, ids)
    if unsupported:
        outcome["reason"] = "the server has no DELETE /v1/devices/<id>: devices left registered"
