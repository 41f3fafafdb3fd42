"""DUP is honest after a crash ([MQTT-3.3.1-1]): a message that may have been sent before
the server died is redelivered with DUP=1, also when its *sent* mark never reached the
disk (sent marks are batched bookkeeping).

The crash is what ``kill -9`` leaves on disk: the database and its WAL copied while the
marks still wait in the committer's queue. The restart is a real ``python -m
simulator.server`` process on that copy, and the device a plain MQTT client.
"""
from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from server_harness import Harness, payload  # noqa: E402
from simulator.server import Committer, Limits, PushServer, ServerSettings, SqliteStore  # noqa: E402
from simulator.server.committer import in_thread  # noqa: E402
from test_server_process import ServerCommand  # noqa: E402

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]
ADMIN = "dup-admin"


async def test_redeliveries_after_a_crash_carry_dup(tmp_path: Path) -> None:
    db = tmp_path / "push.db"
    store = SqliteStore(str(db))
    settings = ServerSettings(admin_token=ADMIN, limits=Limits(push_rate=1e6, push_burst=1e6))
    server = PushServer(store, settings=settings, rng=random.Random(5),
                        committer=Committer(store, in_thread, max_delay=3600.0,
                                            max_items=10**9))  # bookkeeping stays queued
    async with trio.open_nursery() as nursery:
        await nursery.start(server.committer.run)
        harness = Harness(server, nursery, ADMIN)
        app = await harness.create_app()
        device = await harness.register(app, "phone")
        client, _ = await harness.device_client(app, device)
        sent = [await harness.push_to(app, device, i) for i in range(5)]
        got = await client.publishes(5, ack=False)  # written to the device, not acknowledged
        assert [payload(p)["msg_id"] for p in got] == sent
        assert not any(p.dup for p in got)
        crashed = tmp_path / "crashed.db"  # what a kill -9 at this instant leaves
        for suffix in ("", "-wal"):
            shutil.copyfile(f"{db}{suffix}", f"{crashed}{suffix}")
        nursery.cancel_scope.cancel()
    store.close()

    restarted = ServerCommand("--db", str(crashed), "--http-port", "0", "--mqtt-port", "0",
                              "--admin-token", ADMIN)
    try:
        await restarted.started()
        client = await restarted.mqtt()
        connack = await client.connect(device["registration_id"], app["app_key"],
                                       device["token"])
        assert connack.return_code == 0 and connack.session_present
        again = await client.publishes(5)
        assert [(payload(p)["msg_id"], p.dup) for p in again] == [(m, True) for m in sent]
        # A push made after the restart was never sent before: DUP=0.
        from server_harness import basic

        r = await restarted.http("POST", "/v1/push", {
            "audience": {"registration_id": [device["registration_id"]]},
            "message": {"data": "new"}}, basic(app))
        fresh = await client.expect_publish()
        assert (payload(fresh)["msg_id"], fresh.dup) == (r.json["msg_id"], False)
        await client.close()
        code, err = restarted.stop()
        assert code == 0, err
    finally:
        if restarted.proc.poll() is None:
            restarted.proc.kill()
            restarted.proc.communicate()
