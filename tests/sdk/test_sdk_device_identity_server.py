"""Device identity against the real reference server (simulator.server, in process, over
memory streams in virtual time): the same scenarios as test_sdk_device_identity.py, judged by
what the server does — tokens, registration ids, refusals — not by a test server's log."""
import random

import pytest

from pushsdk import (
    ClientState,
    MemoryStateStore,
    PushClient,
    RegistrationRefused,
    ServerConfig,
    VirtualClock,
    register,
)
from sdk_harness import EPOCH, MQTT_HOST, MQTT_PORT, MemoryNetwork

server_mod = pytest.importorskip("simulator.server")
HTTP_HOST, HTTP_PORT = "push.test", 8480
URL = f"http://{HTTP_HOST}:{HTTP_PORT}"


@pytest.fixture
def world(nursery):
    clock = VirtualClock(EPOCH)
    settings = server_mod.ServerSettings(admin_token="admin", mqtt_host=MQTT_HOST,
                                         mqtt_port=MQTT_PORT)
    server = server_mod.PushServer(server_mod.SqliteStore(":memory:"), settings=settings,
                                   clock=clock, rng=random.Random(7))
    app = server.create_app("identity")
    net = MemoryNetwork(nursery)
    net.serve(HTTP_HOST, HTTP_PORT, server.handle_http_stream)
    net.serve(MQTT_HOST, MQTT_PORT, server.handle_mqtt_stream)
    return server, app, net, clock


async def run_once(world, store, *, alias=None, tags=None, on_new_token=None, clock=None):
    server, app, net, world_clock = world
    config = ServerConfig(server_url=URL, app_key=app.app_key, device_id="phone",
                          alias=alias, tags=tags)
    async with PushClient(config, connector=net, state_store=store,
                          clock=clock or world_clock, rng=random.Random(1),
                          on_new_token=on_new_token) as client:
        await client.wait_connected(timeout=30)
    return client


class LaterClock:
    """The wall clock ``offset`` seconds after the world's (token expiry is wall time)."""

    def __init__(self, clock, offset):
        self.clock, self.offset = clock, offset

    def now(self):
        return self.clock.now() + self.offset


async def test_re_registration_proves_the_key_and_keeps_the_registration(world,
                                                                         autojump_clock):
    store, tokens = MemoryStateStore(), []
    first = await run_once(world, store, on_new_token=tokens.append)
    reg = first.registration
    key = store.state.device_key
    later = LaterClock(world[3], reg.token_expires_at - world[3].now() - 10)
    again = await run_once(world, store, on_new_token=tokens.append, clock=later)
    assert again.registration.registration_id == reg.registration_id
    assert len(tokens) == 2 and tokens[0] != tokens[1]
    assert store.state.device_key == key


async def test_another_installation_is_refused(world, autojump_clock):
    await run_once(world, MemoryStateStore())
    intruder = MemoryStateStore()
    with pytest.raises(RegistrationRefused) as info:
        await run_once(world, intruder)
    assert (info.value.status, info.value.code) == (403, "device_bound")
    assert intruder.state is None or intruder.state.registration is None


async def test_a_legacy_registration_proves_itself_with_its_token(world, autojump_clock):
    server, app, net, clock = world
    # Made without a key (as before device identity): unbound on the server.
    legacy = await register(net, URL, app.app_key, "phone")
    store = MemoryStateStore()
    from pushsdk import SdkState

    store.state = SdkState().with_registration(legacy)
    assert store.state.device_key is None
    later = LaterClock(clock, legacy.token_expires_at - clock.now() + 1)  # expired token
    client = await run_once(world, store, clock=later)
    assert client.registration.registration_id == legacy.registration_id
    assert store.state.device_key is not None
    # Now bound: an installation with another key is refused.
    with pytest.raises(RegistrationRefused) as info:
        await run_once(world, MemoryStateStore())
    assert info.value.code == "device_bound"


async def test_alias_conflicts_update_and_unregister(world, autojump_clock):
    server, app, net, clock = world
    other = await register(net, URL, app.app_key, "other-phone", alias="bob")
    assert other.alias == "bob"
    store = MemoryStateStore()
    client = await run_once(world, store, alias="alice", tags=["a"])
    assert (client.registration.alias, client.registration.tags) == ("alice", ("a",))
    with pytest.raises(RegistrationRefused) as info:
        await run_once(world, store, alias="bob")
    assert (info.value.status, info.value.code) == (409, "alias_taken")
    config = ServerConfig(server_url=URL, app_key=app.app_key, device_id="phone")
    async with PushClient(config, connector=net, state_store=store, clock=clock,
                          rng=random.Random(1)) as c:
        await c.wait_connected(timeout=30)
        reg = await c.update(alias="carol", tags=["x"])
        assert (reg.alias, reg.tags) == ("carol", ("x",))
        await c.unregister()
        assert c.state is ClientState.CLOSED
    assert store.state.registration is None
    # The device id is free again: a new installation registers it.
    fresh = await run_once(world, MemoryStateStore())
    assert fresh.registration.registration_id != reg.registration_id
