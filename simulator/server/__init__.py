"""The reference push server: HTTP API (h11), MQTT 3.1.1 gateway and SQLite store.

See docs/server.md. The simulator builds one in-process::

    server = PushServer(SqliteStore(":memory:"), config=ServerConfig(admin_token="..."),
                        clock=VirtualClock(epoch), rng=random.Random(seed))
    await server.handle_mqtt_stream(stream)   # one accepted connection each
"""
from .committer import Committer
from .config import Limits, ServerConfig
from .metrics import ServerStatistics
from .server import (
    AppCredentials,
    DeviceRegistration,
    PushResult,
    PushServer,
    RunningServer,
    run_server,
)
from .store import SqliteStore, Store, StoreError

__all__ = [
    "AppCredentials",
    "Committer",
    "DeviceRegistration",
    "Limits",
    "PushResult",
    "PushServer",
    "RunningServer",
    "ServerConfig",
    "ServerStatistics",
    "SqliteStore",
    "Store",
    "StoreError",
    "run_server",
]
