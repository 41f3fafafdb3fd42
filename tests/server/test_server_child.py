"""``simulator.server_child``: the server child the benchmarks and tests share."""
from __future__ import annotations

from pathlib import Path

import pytest

from simulator.server_child import LOOPBACK_LIMITS, ServerChild, basic_auth, http_request

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]


def test_a_child_without_a_token_uses_the_one_the_server_drew(tmp_path: Path) -> None:
    server = ServerChild(tmp_path / "push.db", limits=LOOPBACK_LIMITS, log=tmp_path / "s.log")
    try:
        assert server.admin_token == server.info["admin_token"] and len(server.admin_token) >= 20
        app = server.create_app("demo")
        status, body = http_request(server.http_port, "POST", "/v1/push",
                                    {"audience": "all", "message": {"data": 1}}, basic_auth(app))
        assert (status, body["targets"]) == (200, 0)
        assert server.metrics()["pushsim_pushes_accepted_total"] == 1
        assert server.rss() > 0
    finally:
        server.terminate()
    assert server.proc.returncode == 0  # SIGTERM: a clean shutdown
    assert server.rss() == 0


def test_a_child_that_exits_at_once_is_a_one_line_error(tmp_path: Path) -> None:
    log = tmp_path / "s.log"
    with pytest.raises(RuntimeError, match=r"^the server exited with status 2 \(see .*s\.log\)$"):
        ServerChild(tmp_path / "push.db", extra=("--no-such-option",), log=log)
    assert "--no-such-option" in log.read_text()
