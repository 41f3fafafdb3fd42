"""Mistakes end ``pushsim fleet`` / ``pushsim merge`` with one line on stderr and exit 2."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fleet_harness import pushsim
from support.mosquitto import run_mosquitto
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


@pytest.fixture(scope="module")
def one_run(tmp_path_factory) -> Path:
    """A real result of ``pushsim fleet`` against Mosquitto (one shard, 0/1), which merges on
    its own; tests edit copies of it."""
    directory = tmp_path_factory.mktemp("one-run")
    with run_mosquitto(directory) as broker:
        done = pushsim("fleet", "--broker", broker.url, "--handsets", "2", "--duration", "1",
                       "--push-rate", "2", "--drain", "1", "--no-progress",
                       "--out", str(directory / "run"))
    assert done.returncode == 0, done.stderr
    merged = pushsim("merge", str(directory / "run"), "--out", str(directory / "merged"))
    assert merged.returncode == 0, merged.stderr
    return directory / "run"


@pytest.mark.parametrize("out", ["a", "./a/", "link", "{tmp}/a"])
def test_merge_does_not_write_over_an_input(one_run, tmp_path, out):
    shutil.copytree(one_run, tmp_path / "a")
    (tmp_path / "link").symlink_to("a")
    before = {f.name: f.read_bytes() for f in (tmp_path / "a").iterdir()}
    out = out.format(tmp=tmp_path)
    done = pushsim("merge", "a", "--out", out, cwd=tmp_path)
    assert done.returncode == 2
    spelled = "" if out == "a" else " (a)"
    assert done.stderr == (f"pushsim merge: --out {out} is one of the inputs{spelled}; write "
                           "the merged result elsewhere\n")
    assert done.stdout == ""
    assert {f.name: f.read_bytes() for f in (tmp_path / "a").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "link"]


def test_merge_does_not_write_over_the_second_input(one_run, tmp_path):
    for name in ("a", "b"):
        shutil.copytree(one_run, tmp_path / name)
    before = (tmp_path / "b" / "fleet.json").read_bytes()
    done = pushsim("merge", "a", "b", "--out", "./b", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == ("pushsim merge: --out ./b is one of the inputs (b); write the "
                           "merged result elsewhere\n")
    assert (tmp_path / "b" / "fleet.json").read_bytes() == before


def _edited(one_run: Path, to: Path, edit) -> Path:
    """A copy of ``one_run`` whose fleet.json ``edit`` (a function of the parsed JSON) changed."""
    shutil.copytree(one_run, to)
    fleet = json.loads((to / "fleet.json").read_text())
    edit(fleet)
    (to / "fleet.json").write_text(json.dumps(fleet))
    return to


def _merge_refused(bad: Path, out: Path) -> str:
    """Merge ``bad`` (into ``out``): refused with one line, exit 2, nothing written."""
    done = pushsim("merge", str(bad), "--out", str(out))
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"pushsim merge: {bad}/fleet.json: ")
    assert not out.exists()
    return done.stderr.removeprefix(f"pushsim merge: {bad}/fleet.json: ").rstrip("\n")


FIELDS = {"run": "an object", "connect": "an object", "pushes": "an object",
          "counters": "an object", "histograms": "an object", "per_second": "an object",
          "cleanup": "an object", "timeline": "an array", "shards": "an array",
          "processes": "an array", "storms": "an array", "publisher_events": "an array",
          "missing": "an array"}


@pytest.mark.parametrize(("value", "got"), [(None, "null"), ("zz", "a string ('zz')")],
                         ids=["null", "string"])
@pytest.mark.parametrize("field", sorted(FIELDS))
def test_merge_refuses_a_top_level_field_of_the_wrong_type(one_run, tmp_path, field, value,
                                                            got):
    bad = _edited(one_run, tmp_path / "bad", lambda fleet: fleet.update({field: value}))
    assert _merge_refused(bad, tmp_path / "m") == (
        f"not a fleet result ({field}: expected {FIELDS[field]}, got {got})")


def _set(path: tuple, value):
    def edit(fleet):
        for key in path[:-1]:
            fleet = fleet[key]
        fleet[path[-1]] = value
    return edit


@pytest.mark.parametrize(("edit", "message"), [
    (lambda fleet: fleet.pop("pushes"), "not a fleet result (pushes: missing)"),
    (_set(("run", "shards"), "0/1"), "not a fleet result (run.shards: expected an array, "
                                     "got a string ('0/1'))"),
    (_set(("run", "shards"), ["one"]), "not a fleet result (run.shards[0]: expected i/N, "
                                       "got 'one')"),
    (_set(("run", "workers"), "2"), "not a fleet result (run.workers: expected an integer, "
                                    "got a string ('2'))"),
    (_set(("shards", 0, "flags"), None), "not a fleet result (shards[0].flags: expected an "
                                         "array, got null)"),
    (_set(("counters", "pushes_sent"), "2"), "not a fleet result (counters.pushes_sent: "
                                             "expected a number, got a string ('2'))"),
    (_set(("per_second", "counts", "connects"), 1), "not a fleet result "
     "(per_second.counts.connects: expected an array, got a number)"),
    (_set(("timeline", 0, "t"), None), "not a fleet result (timeline[0].t: expected an "
                                       "integer, got null)"),
    (_set(("cleanup", "failed"), True), "not a fleet result (cleanup.failed: expected a "
                                        "number, got true)"),
    (_set(("histograms", "latency"), "HISTFAAAAAA="), "not a fleet result (histograms.latency: "
                                                      "not an HDR histogram ("),
], ids=["absent", "run.shards", "run.shards[0]", "run.workers", "shards[0].flags",
        "counters", "per_second", "timeline", "cleanup", "histogram"])
def test_merge_refuses_a_fleet_json_with_a_field_of_the_wrong_shape(one_run, tmp_path, edit,
                                                                     message):
    bad = _edited(one_run, tmp_path / "bad", edit)
    assert _merge_refused(bad, tmp_path / "m").startswith(message)
