"""The reference push server: HTTP API (h11), MQTT 3.1.1 gateway and SQLite store.

See docs/server.md. The simulator builds one in-process::

    server = PushServer(SqliteStore(":memory:"), settings=ServerSettings(admin_token="..."),
                        clock=VirtualClock(epoch), rng=random.Random(seed))
    await server.handle_mqtt_stream(stream)   # one accepted connection each
"""
from .committer import Committer
from .listeners import RunningServer, run_server, serve_tcp
from .metrics import ServerStatistics
from .records import Refused
from .server import AppCredentials, DeviceRegistration, PushResult, PushServer
from .settings import Limits, ServerSettings
from .store import SqliteStore, Store, StoreError

__all__ = [
    "AppCredentials",
    "Committer",
    "DeviceRegistration",
    "Limits",
    "PushResult",
    "PushServer",
    "Refused",
    "RunningServer",
    "ServerSettings",
    "ServerStatistics",
    "SqliteStore",
    "Store",
    "StoreError",
    "run_server",
    "serve_tcp",
]
