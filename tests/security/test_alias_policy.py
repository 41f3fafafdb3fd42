"""Aliases with a policy (docs/security.md): a device binds an alias only while fewer than
``alias_device_limit`` devices of its app hold it; the app server binds any."""
from __future__ import annotations

import pytest

from server_harness import Harness, basic

pytestmark = pytest.mark.timeout(30)


async def _targets(harness: Harness, app: dict, alias: str) -> int:
    r = await harness.push(app, {"audience": {"alias": [alias]}, "message": {"data": 1}})
    assert r.status == 200, r
    return r.json["targets"]


async def test_a_taken_alias_is_409_and_changes_nothing(harness: Harness,
                                                        autojump_clock) -> None:
    app = await harness.create_app()
    alice = await harness.register(app, "alice-phone", alias="alice")
    squatter = harness.key_of(app, "squatter")
    r = await harness.register_raw(app, {"device_id": "squatter", "platform": "android",
                                         "device_key": squatter.public, "alias": "alice",
                                         "tags": ["x"]})
    assert (r.status, r.error_code) == (409, "alias_taken")
    assert harness.server.statistics().devices == 1  # not registered either
    mallory = await harness.register(app, "mallory", alias="mallory")
    own = {"Authorization": f"Bearer {mallory['token']}"}
    r = await harness.request("PUT", f"/v1/devices/{mallory['registration_id']}",
                              {"alias": "alice", "tags": ["new"]}, headers=own)
    assert (r.status, r.error_code) == (409, "alias_taken")
    device = harness.server.store.device(mallory["registration_id"])
    assert (device.alias, device.tags) == ("mallory", ())
    assert await _targets(harness, app, "alice") == 1  # a push to alice reaches alice only
    # Keeping one's own alias is not taking it; another app's alias is another alias.
    again = await harness.register(app, "alice-phone", alias="alice")
    assert again["registration_id"] == alice["registration_id"]
    other = await harness.create_app("other")
    await harness.register(other, "their-alice", alias="alice")
    # Releasing it frees it.
    r = await harness.request("PUT", f"/v1/devices/{alice['registration_id']}",
                              {"alias": None},
                              headers={"Authorization": f"Bearer {again['token']}"})
    assert r.status == 200 and r.json["alias"] is None
    r = await harness.request("PUT", f"/v1/devices/{mallory['registration_id']}",
                              {"alias": "alice"}, headers=own)
    assert r.status == 200 and r.json["alias"] == "alice"


async def test_the_app_server_binds_any_alias(harness: Harness, autojump_clock) -> None:
    app = await harness.create_app()
    await harness.register(app, "phone", alias="bob")
    tablet = await harness.register(app, "tablet")
    r = await harness.request("PUT", f"/v1/devices/{tablet['registration_id']}",
                              {"alias": "bob"}, headers=basic(app))
    assert r.status == 200 and r.json["alias"] == "bob"
    assert await _targets(harness, app, "bob") == 2
    other = await harness.create_app("other")
    r = await harness.request("PUT", f"/v1/devices/{tablet['registration_id']}",
                              {"alias": "eve"}, headers=basic(other))
    assert r.status == 404  # not that app's device


async def test_the_limit_is_configurable(make_harness, autojump_clock) -> None:
    harness = make_harness(alias_device_limit=2)
    app = await harness.create_app()
    await harness.register(app, "phone", alias="family")
    await harness.register(app, "tablet", alias="family")  # the second is allowed
    key = harness.key_of(app, "watch")
    r = await harness.register_raw(app, {"device_id": "watch", "platform": "android",
                                         "device_key": key.public, "alias": "family"})
    assert (r.status, r.error_code) == (409, "alias_taken")
    assert await _targets(harness, app, "family") == 2
