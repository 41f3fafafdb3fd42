"""Scenario loading and validation (simulator.scenario)."""
import importlib.resources
import textwrap
from pathlib import Path

import pytest

from simulator.scenario import (
    BUILTIN_SCENARIOS,
    KNOWN_RADIO_MODELS,
    Choice,
    Exponential,
    Fixed,
    Mixture,
    Scenario,
    ScenarioError,
    Uniform,
    list_builtin,
)

MINIMAL = """
name = "tiny"
description = "one network, one group"

[networks.lte]
type = "cellular"
radio = "lte"
nat_timeout_s = 300

[[groups]]
name = "all"
network = "lte"
"""


def write(tmp_path, text, name="scenario.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", BUILTIN_SCENARIOS)
def test_every_builtin_loads_from_its_toml_file(name):
    scenario = Scenario.builtin(name)
    assert scenario.name == name
    assert scenario.description
    assert scenario.source == f"{name}.toml"
    assert Scenario.load(name) == scenario
    assert all(n.radio in KNOWN_RADIO_MODELS for n in scenario.networks)


def test_builtin_directory_holds_exactly_the_builtins():
    folder = importlib.resources.files("simulator") / "scenarios"
    names = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))
    assert names == sorted(BUILTIN_SCENARIOS)


def test_list_builtin_gives_names_and_descriptions_in_order():
    listing = list_builtin()
    assert [name for name, _ in listing] == list(BUILTIN_SCENARIOS)
    assert all(isinstance(d, str) and d for _, d in listing)


def test_builtin_contents():
    five = Scenario.builtin("carrier-nat-5min")
    assert five.network("lte").nat_timeout == Fixed(300.0)
    assert five.network("lte").nat_behaviour == "drop"
    assert five.network("lte").radio == "lte"
    assert Scenario.builtin("carrier-nat-30min").network("lte").nat_timeout == Fixed(1800.0)
    home = Scenario.builtin("home-wifi").network("home").nat_timeout
    assert isinstance(home, Mixture) and [w for w, _ in home.parts] == [0.70, 0.15, 0.15]
    assert home.parts[2][1] == Uniform(7440.0, 14400.0)
    commuter = Scenario.builtin("commuter")
    assert [(r.at / 3600, r.to) for r in commuter.groups[0].switches] == [
        (8, "lte"), (9, "office"), (18, "lte"), (19, "home")]
    overnight = Scenario.builtin("doze-overnight")
    assert overnight.start == 22 * 3600 and overnight.hours == 10
    assert all(g.doze.deep and g.doze.light for g in overnight.groups)


def test_mixed_follows_the_suggested_mixture():
    mixed = Scenario.builtin("mixed")
    weights = {g.name: g.weight for g in mixed.groups}
    cellular = weights["carrierA"] + weights["carrierB"] + weights["carrierC"]
    assert cellular == pytest.approx(0.7)
    assert weights["carrierA"] / cellular == pytest.approx(0.3)
    assert weights["carrierB"] / cellular == pytest.approx(0.2)
    assert weights["carrierC"] / cellular == pytest.approx(0.5)
    assert mixed.network("carrierB").nat_timeout == Uniform(600.0, 1800.0)
    assert mixed.network("carrierB").nat_behaviour == "rst"
    assert min(mixed.network("carrierC").nat_timeout.values) >= 1800
    assert mixed.workload.direct_per_handset_day == 10


def test_minimal_file_gets_defaults(tmp_path):
    scenario = Scenario.from_toml(write(tmp_path, MINIMAL))
    assert (scenario.handsets, scenario.hours, scenario.start) == (100, 24.0, 0.0)
    network = scenario.network("lte")
    assert network.key == "mobile_lte" and network.nat_behaviour == "drop"
    assert (network.latency, network.jitter) == (0.040, 0.020)
    group = scenario.groups[0]
    assert group.weight == 1.0 and not group.doze.enabled and group.outages is None
    assert group.app.kind == "user"


def test_doze_table_overrides_aosp_constants(tmp_path):
    text = MINIMAL + ("doze = { light = true, inactive_timeout_s = 900, idle_factor = 3, "
                      "high_priority_grace_s = 30 }\n")
    doze = Scenario.from_toml(write(tmp_path, text)).groups[0].doze
    assert doze.deep and doze.light
    assert (doze.inactive_timeout, doze.idle_factor, doze.high_priority_grace) == (900, 3, 30)
    assert Scenario.from_toml(write(tmp_path, MINIMAL + "doze = true\n")).groups[0].doze.deep


def test_distribution_forms(tmp_path):
    text = MINIMAL.replace("nat_timeout_s = 300",
                           """nat_timeout_s = { choice = [300, 1800], weights = [1, 3] }""")
    assert Scenario.from_toml(write(tmp_path, text)).network("lte").nat_timeout == Choice(
        (300.0, 1800.0), (1.0, 3.0))
    text = MINIMAL.replace("nat_timeout_s = 300", "nat_timeout_s = { uniform = [600, 1800] }")
    assert Scenario.from_toml(write(tmp_path, text)).network("lte").nat_timeout == \
        Uniform(600.0, 1800.0)
    text = MINIMAL + 'outages = { per_day = 2, duration_s = { exponential = 60 } }\n'
    assert Scenario.from_toml(write(tmp_path, text)).groups[0].outages.duration == Exponential(60.0)


def bad(tmp_path, text):
    with pytest.raises(ScenarioError) as info:
        Scenario.from_toml(write(tmp_path, text, "bad.toml"))
    message = str(info.value)
    assert message.startswith(str(tmp_path / "bad.toml") + ": ")
    return message


def test_missing_field_is_named(tmp_path):
    message = bad(tmp_path, MINIMAL.replace('nat_timeout_s = 300\n', ""))
    assert "networks.lte.nat_timeout_s: missing (required)" in message
    message = bad(tmp_path, MINIMAL.replace('description = "one network, one group"\n', ""))
    assert "description: missing" in message


def test_unknown_radio_model_is_named_with_the_known_ones(tmp_path):
    message = bad(tmp_path, MINIMAL.replace('radio = "lte"', 'radio = "5g-mmwave"'))
    assert "networks.lte.radio" in message and "'5g-mmwave'" in message
    assert "lte-aro" in message and "wifi-huang2012" in message


def test_radio_must_fit_the_network_type(tmp_path):
    message = bad(tmp_path, MINIMAL.replace('radio = "lte"', 'radio = "wifi"'))
    assert "networks.lte.radio" in message and "cellular" in message


@pytest.mark.parametrize("dist, expected", [
    ("{ uniform = [1800, 600] }", "low 1800 is above high 600"),
    ("{ uniform = [600] }", "must be [low, high]"),
    ("{ choice = [300, 600], weights = [1] }", "weights: must be an array of 2 numbers"),
    ("{ choice = [300], weights = [0] }", "must not all be 0"),
    ("{ fixed = 300, uniform = [1, 2] }", "exactly one of"),
    ("{ gaussian = 300 }", "exactly one of"),
    ('"300"', "must be a number or a table"),
    ("0", "every value must be > 0"),
    ("{ uniform = [0, 100] }", "every value must be > 0"),
    ("{ exponential = 300 }", "every value must be > 0"),
    ("{ mixture = [{ weight = 1, uniform = [5, 1] }] }", "low 5 is above high 1"),
])
def test_bad_distributions_are_explained(tmp_path, dist, expected):
    message = bad(tmp_path, MINIMAL.replace("nat_timeout_s = 300", f"nat_timeout_s = {dist}"))
    assert "networks.lte.nat_timeout_s" in message and expected in message


def test_unknown_fields_are_reported(tmp_path):
    message = bad(tmp_path, MINIMAL.replace('network = "lte"', 'network = "lte"\nwieght = 2'))
    assert "groups[0].wieght: unknown field" in message


def test_reference_errors(tmp_path):
    message = bad(tmp_path, MINIMAL.replace('network = "lte"', 'network = "wifi"'))
    assert "groups[0].network: unknown network 'wifi' (defined: lte)" in message
    switch = MINIMAL + '[[groups.switches]]\nat = "08:00"\nto = "office"\n'
    assert "groups[0].switches[0].to: unknown network 'office'" in bad(tmp_path, switch)
    clock = MINIMAL + '[[groups.switches]]\nat = "8am"\nto = "lte"\n'
    assert 'must be a time of day "HH:MM" (a quoted string), got \'8am\'' in bad(tmp_path, clock)
    toml_time = MINIMAL.replace("description", "start = 12:00:00\ndescription")
    assert "start: must be a time of day \"HH:MM\" (a quoted string), got a TOML date or time" \
        in bad(tmp_path, toml_time)


def test_overlapping_switch_windows_are_refused(tmp_path):
    text = MINIMAL + textwrap.dedent("""
        [[groups.switches]]
        at = "08:00"
        jitter_s = 1800
        to = "lte"
        [[groups.switches]]
        at = "08:30"
        jitter_s = 600
        to = "lte"
    """)
    assert "groups[0].switches[1]: switch windows" in bad(tmp_path, text)


def test_other_value_errors(tmp_path):
    assert "groups[0].weight: must be > 0" in bad(tmp_path, MINIMAL + "weight = 0\n")
    assert "handsets: must be an integer" in bad(tmp_path, MINIMAL.replace(
        'description', 'handsets = 1.5\ndescription'))
    assert "nat_behaviour: must be one of drop, rst" in bad(tmp_path, MINIMAL.replace(
        "nat_timeout_s = 300", 'nat_timeout_s = 300\nnat_behaviour = "reject"'))
    assert "groups[0].doze: doze.max_maintenance must be" in bad(
        tmp_path, MINIMAL + "doze = { max_maintenance_s = 60 }\n")
    assert "groups[0].doze.max_maintenance: unknown field" in bad(
        tmp_path, MINIMAL + "doze = { max_maintenance = 600 }\n")
    assert "groups[0].app.foreground_share: must be ≤ 1" in bad(
        tmp_path, MINIMAL + "app = { foreground_share = 2 }\n")
    assert "workload.payload_bytes: must not exceed 3000" in bad(
        tmp_path, MINIMAL.replace("[networks.lte]",
                                  "[workload]\npayload_bytes = 4000\n\n[networks.lte]"))
    assert "workload.ttl_s: must be a number or a choice" in bad(
        tmp_path, MINIMAL.replace("[networks.lte]",
                                  "[workload]\nttl_s = { uniform = [0, 10] }\n\n[networks.lte]"))
    assert "workload.ttl_s: must not exceed 2419200 s" in bad(
        tmp_path, MINIMAL.replace("[networks.lte]",
                                  "[workload]\nttl_s = 2419201\n\n[networks.lte]"))
    assert "hours: must be ≤ 8760" in bad(tmp_path, MINIMAL.replace(
        'description', 'hours = 1e7\ndescription'))
    assert "hours: must be ≥ 0.0166667" in bad(tmp_path, MINIMAL.replace(
        'description', 'hours = 0.001\ndescription'))
    # Every key the table knows is listed, also when none of them was given.
    assert ("groups[0].doze.foo: unknown field (known here: deep, "
            in bad(tmp_path, MINIMAL + "doze = { foo = 1 }\n"))
    no_groups = MINIMAL.split("[[groups]]")[0].replace("[networks.lte]",
                                                       "groups = []\n[networks.lte]")
    assert "groups: define at least one" in bad(tmp_path, no_groups)


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read scenario file"):
        Scenario.from_toml(tmp_path / "missing.toml")
    with pytest.raises(ScenarioError, match="invalid TOML"):
        Scenario.from_toml(write(tmp_path, "name = ", "broken.toml"))
    with pytest.raises(ScenarioError, match="neither a built-in scenario"):
        Scenario.load("no-such-scenario")
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'"):
        Scenario.builtin("nope")


def test_load_accepts_a_path(tmp_path):
    path = write(tmp_path, MINIMAL)
    assert Scenario.load(str(path)).name == "tiny"


def test_the_documented_example_loads():
    doc = (Path(__file__).parents[2] / "docs" / "scenarios.md").read_text(encoding="utf-8")
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    scenario = Scenario.from_text(example, source="docs/scenarios.md")
    group = scenario.groups[0]
    assert [r.to for r in group.switches] == ["lte", "home"]
    assert group.app.opens_per_day == 50 and group.doze.deep
    assert scenario.workload.ttl_choices == ((86400, 0.85), (3600, 0.10), (0, 0.05))
    assert len(scenario.handset_specs(3, seed=0)) == 3


def test_known_radio_models_resolve_in_the_radio_registry():
    profiles = pytest.importorskip("simulator.radio.profiles")
    for name in KNOWN_RADIO_MODELS:
        assert profiles.get_model(name) is not None


def test_nat_model_keys(tmp_path):
    text = MINIMAL.replace("nat_timeout_s = 300", """nat_timeout_s = 600
nat_spread = 0.2
nat_sweep_s = 60
nat_refresh = "outbound"
loss = 0.01
rto_min_s = 0.5
max_retransmissions = 8
nat_schedule = [{ at = "00:00", factor = 1 }, { at = "18:30", factor = 0.5 }]""")
    scenario = Scenario.from_toml(write(tmp_path, text))
    network = scenario.network("lte")
    assert (network.nat_spread, network.nat_sweep, network.nat_refresh) == (0.2, 60, "outbound")
    assert network.nat_schedule == ((0.0, 1.0), (18.5 * 3600, 0.5))
    assert (network.loss, network.rto_min, network.max_retransmissions) == (0.01, 0.5, 8)
    spec = scenario.handset_spec(0, seed=1)
    nat = spec.network.nat()
    assert 0 <= nat.sweep_phase < 60 and nat.refresh == "outbound"
    assert nat.for_connection(0.0).timeout_at(19 * 3600) == 600 * 0.8 * 0.5


@pytest.mark.parametrize("line, expected", [
    ('nat_refresh = "inbound"', "nat_refresh: must be one of both, outbound"),
    ("nat_spread = 1.5", "nat_spread: must be ≤ 0.95"),
    ("loss = 0.9", "loss: must be ≤ 0.5"),
    ('nat_schedule = [{ at = "18:00", factor = 0 }]', "factor: must be > 0"),
    ('nat_schedule = [{ at = "18:00", factor = 1 }, { at = "06:00", factor = 2 }]',
     "nat_schedule: steps must be in increasing"),
    ('nat_schedule = [{ at = "18:00", factor = 1, until = "19:00" }]', "until: unknown field"),
])
def test_bad_nat_model_keys_are_named(tmp_path, line, expected):
    message = bad(tmp_path, MINIMAL.replace("nat_timeout_s = 300", "nat_timeout_s = 300\n" + line))
    assert expected in message


def test_adversarial_builtins():
    assert Scenario.builtin("nat-45s").network("lte").nat_timeout == Fixed(45.0)
    evening = Scenario.builtin("evening-nat").handset_spec(0, 1).network.nat().for_connection()
    assert evening.timeout_at(12 * 3600) == 1800
    assert evening.timeout_at(20 * 3600) == pytest.approx(300, rel=0.01)
    spread = Scenario.builtin("wide-spread").network("lte")
    assert (spread.nat_spread, spread.nat_sweep, spread.nat_refresh, spread.loss) == (
        0.5, 120, "outbound", 0.02)
    heavy = Scenario.builtin("heavy-doze").groups[0]
    assert heavy.doze.deep and heavy.doze.light and heavy.app.opens_per_day == 8
