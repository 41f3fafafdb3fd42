"""Mistakes end ``pushsim fleet`` / ``pushsim merge`` with one line on stderr and exit 2."""
from __future__ import annotations

import pytest

from fleet_harness import pushsim
from support.ports import free_port

FLEET = ("fleet", "--handsets", "4", "--duration", "2")


@pytest.mark.parametrize(("args", "message"), [
    (("--server", "ftp://example"), "server URL must start with http:// or https://"),
    (("--server", "http://127.0.0.1:{port}", "--admin-token", "t"),
     "cannot reach the server at http://127.0.0.1:{port}: cannot connect to 127.0.0.1:{port}: "
     "Connection refused"),
    (("--broker", "mqtt://127.0.0.1:{port}"),
     "cannot reach the broker at mqtt://127.0.0.1:{port}"),
    (("--broker", "http://127.0.0.1:1883"), "broker URL must start with mqtt://, mqtts://, ws:// or wss://"),
    (("--server", "http://127.0.0.1:8480"), "--server needs --admin-token T, or --app-key K"),
    (("--broker", "mqtt://127.0.0.1:1", "--source-ips", "127.0.0.9-127.0.0.2"),
     "--source-ips: 127.0.0.2 comes before 127.0.0.9"),
    (("--broker", "mqtt://127.0.0.1:1", "--source-ips", "127.0.0.2-"),
     "--source-ips must be FIRST-LAST addresses"),
    (("--broker", "mqtt://127.0.0.1:1", "--source-ips", "127.0.0.2-::1"),
     "not of the same IP version"),
    (("--broker", "mqtt://127.0.0.1:1", "--shard", "2/2"), "--shard must be i/N"),
    (("--broker", "mqtt://127.0.0.1:1", "--strategy", "nope"), "unknown heartbeat strategy"),
    (("--broker", "mqtt://127.0.0.1:1", "--radio-model", "5g"), "5g"),
    (("--broker", "mqtt://127.0.0.1:1", "--ramp", "1"), "take 4.0 s to start, more than"),
    (("--broker", "mqtt://127.0.0.1:1", "--fail-if", "nope>1"),
     "--fail-if 'nope>1': 'nope' is not a field of the summary; numeric fields: "),
    (("--broker", "mqtt://127.0.0.1:1", "--fail-if", "lost=>0"), "expected FIELD OP NUMBER"),
    (("--broker", "mqtt://127.0.0.1:1", "--fail-if", "strategy==1"), "'strategy' is a text"),
    (("--broker", "mqtt://127.0.0.1:1", "--fail-if", "lost>x"), "'x' is not a number"),
    (("--server", "http://127.0.0.1:1", "--admin-token", "t", "--qos", "2"),
     "--qos and --session are for --broker"),
    (("--broker", "mqtt://127.0.0.1:1", "--shared-group", "g"),
     "--shared-group: only in MQTT 5; add --mqtt-version 5"),
    (("--broker", "mqtt://127.0.0.1:1", "--message-expiry", "9", "--session-expiry", "9"),
     "--message-expiry, --session-expiry: only in MQTT 5"),
    (("--broker", "mqtt://127.0.0.1:1", "--mqtt-version", "5", "--shared-group", "a/b"),
     "--shared-group must not contain +, # or /"),
    (("--broker", "mqtt://127.0.0.1:1", "--mqtt-version", "5", "--session", "clean",
      "--session-expiry", "9"), "--session-expiry is for --session persistent"),
    (("--broker", "mqtt://127.0.0.1:1", "--mqtt-transport", "ws"),
     "--mqtt-transport is for --server; give the broker a ws:// or wss:// URL"),
    (("--server", "http://127.0.0.1:1", "--admin-token", "t", "--shared-group", "g"),
     "--shared-group and --session-expiry are for --broker"),
    (("--broker", "mqtt://127.0.0.1:1", "--mqtt-version", "4"), "argument --mqtt-version"),
    (("--broker", "ws://127.0.0.1:{port}/mqtt", "--mqtt-version", "5"),
     "cannot reach the broker at ws://127.0.0.1:{port}/mqtt"),
    (("--broker", "mqtt://127.0.0.1:1", "--scenario", "/nonexistent.toml"),
     "--duration comes from the scenario's stages"),
    (("--broker", "mqtt://127.0.0.1:1", "--client-id-prefix", "a/b"),
     "--client-id-prefix must not contain"),
    (("--broker", "mqtt://127.0.0.1:1", "--workers", "5"), "--workers 5 is more than the 4"),
    (("--broker", "mqtt://127.0.0.1:1", "--ca", "/nonexistent/ca.pem"),
     "cannot load CA file /nonexistent/ca.pem"),
    (("--broker", "mqtt://127.0.0.1:1", "--duration", "-1"), "argument --duration"),
    ((), "one of the arguments --server --broker is required"),
])
def test_bad_arguments_are_one_line_errors(args, message, tmp_path):
    port = free_port()  # nothing listens there
    args = tuple(a.format(port=port) for a in args)
    done = pushsim(*FLEET, *args, timeout=30, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("pushsim fleet: ")
    assert message.format(port=port) in done.stderr
    assert done.stdout == ""
    # Nothing was created: not even the default ./pushsim-fleet results directory.
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("text", "message"), [
    ("[fleet]\nhandsets = 4\n[[stage]]\nkind = 'ramp'\nduration = 1\nhandsets = 3\n",
     "the ramp stages start 3 handsets, the fleet has 4"),
    ("[fleet]\nhandsets = 4\n[[stage]]\nkind = 'jump'\nduration = 1\n",
     "stage 1 (jump): kind must be one of ramp, hold, storm, drain"),
    ("[fleet]\nhandsets = 4\n[[stage]]\nkind = 'ramp'\nduration = 1\nhandsets = 4\n"
     "[[stage]]\nkind = 'drain'\nduration = 1\n[[stage]]\nkind = 'hold'\nduration = 1\n",
     "drain must be the last stage"),
    ("[fleet]\nhandsets = 'many'\n", "handsets must be int"),
    ("[fleet]\nqos = 1\ncolour = 2\n", "unknown key 'colour'"),
    ("[[stage]\n", "is not valid TOML"),
])
def test_scenario_file_mistakes(text, message, tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text(text)
    done = pushsim("fleet", "--broker", "mqtt://127.0.0.1:1", "--scenario", str(scenario),
                   timeout=30, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr


def test_merge_mistakes(tmp_path):
    missing = pushsim("merge", str(tmp_path / "nope"), "--out", str(tmp_path / "m"))
    assert missing.returncode == 2
    assert missing.stderr == (f"pushsim merge: {tmp_path / 'nope'} is not a fleet results "
                              "directory: fleet.json is missing\n")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "fleet.json").write_text("[1, 2]")
    junk = pushsim("merge", str(tmp_path / "junk"), "--out", str(tmp_path / "m"))
    assert junk.returncode == 2 and "is not a pushsim fleet result" in junk.stderr
    twice = pushsim("merge", str(tmp_path / "junk"), str(tmp_path / "junk"),
                    "--out", str(tmp_path / "m"))
    assert twice.returncode == 2 and twice.stderr.count("\n") == 1
    assert not (tmp_path / "m").exists()
