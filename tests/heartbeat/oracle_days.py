"""Random and adversarial days for the oracle's property tests: every model the world has.

``day_scenario(...)`` writes a small TOML scenario (three handsets, two networks) from a
handful of knobs, so hypothesis can draw days with per-connection NAT spread, daily NAT
schedules, sweep timers, outbound-only refresh, silent drop or RST, packet loss, CPU wake
costs, screen-on sharing, 5G NR, 3G FACH, Wi-Fi, Doze, outages and network switches.
"""
from __future__ import annotations

from hypothesis import strategies as st

from simulator.scenario import Scenario

RADIOS = ("lte", "lte-aro", "5g-sa", "5g-nsa-mmwave", "3g", "3g-aro")
WIFI_RADIOS = ("wifi", "wifi-aro")


def day_scenario(*, nat: float = 300, spread: float = 0.0, schedule: bool = False,
                 sweep: float = 0.0, outbound: bool = False, rst: bool = False,
                 loss: float = 0.0, radio: str = "lte", wifi_radio: str = "wifi",
                 nat2: float = 600, cpu: bool = True, screen_radio: bool = True,
                 wakeups: float = 2, doze: bool = False, outages: float = 0,
                 switch: bool = False, opens: float = 100, pushes: float = 60,
                 app: str = "user", name: str = "random") -> Scenario:
    steps = ('nat_schedule = [{ at = "00:00", factor = 1.0 }, { at = "00:50", factor = 0.25 },'
             ' { at = "01:20", factor = 2.0 }]') if schedule else ""
    networks = f'''
[networks.a]
type = "cellular"
key = "mobile_a"
radio = "{radio}"
nat_timeout_s = {nat}
nat_spread = {spread}
nat_sweep_s = {sweep}
nat_refresh = "{"outbound" if outbound else "both"}"
nat_behaviour = "{"rst" if rst else "drop"}"
loss = {loss}
{steps}
[networks.b]
type = "wifi"
key = "wifi_b"
radio = "{wifi_radio}"
nat_timeout_s = {nat2}
nat_behaviour = "rst"
'''
    switches = ('switches = [{ at = "00:40", to = "b" }, { at = "01:30", to = "a" }]'
                if switch else "")
    doze_table = "{ deep = true, light = true, inactive_timeout_s = 300, " \
                 "idle_after_inactive_s = 300, idle_timeout_s = 900 }" if doze else "false"
    app_table = (f'{{ model = "user", opens_per_day = {opens}, mean_session_s = 120, '
                 f'foreground_share = 0.3 }}' if app == "user" else f'{{ model = "{app}" }}')
    outage_line = (f"outages = {{ per_day = {outages}, duration_s = {{ uniform = [30, 600] }} }}"
                   if outages else "")
    group = f'''
[[groups]]
name = "g"
network = "a"
doze = {doze_table}
cpu = "{"nexus4" if cpu else "none"}"
screen_radio = {"true" if screen_radio else "false"}
app = {app_table}
background = {{ wakeups_per_hour = {wakeups} }}
{outage_line}
{switches}
'''
    text = (f'name = "{name}"\ndescription = "oracle property test"\nhandsets = 3\n'
            'hours = 2\nstart = "00:00"\n' + networks + group
            + f"[workload]\ndirect_per_handset_day = {pushes}\n"
            f"tag_per_day = {pushes / 10:g}\nbroadcast_per_day = {pushes / 60:g}\n")
    return Scenario.from_text(text, f"{name}.toml")


DAYS = st.builds(
    day_scenario,
    nat=st.sampled_from([45, 90, 300, 600, 1800]),
    spread=st.sampled_from([0.0, 0.0, 0.3]),
    schedule=st.booleans(),
    sweep=st.sampled_from([0.0, 0.0, 60.0]),
    outbound=st.booleans(),
    rst=st.booleans(),
    loss=st.sampled_from([0.0, 0.0, 0.03]),
    radio=st.sampled_from(RADIOS),
    wifi_radio=st.sampled_from(WIFI_RADIOS),
    nat2=st.sampled_from([60, 300, 3600]),
    cpu=st.booleans(),
    screen_radio=st.booleans(),
    wakeups=st.sampled_from([0, 2, 12, 60]),
    doze=st.booleans(),
    outages=st.sampled_from([0, 0, 12]),
    switch=st.booleans(),
    app=st.sampled_from(["user", "user", "background", "foreground"]),
)

#: Days built to corner the bound: each stresses one rule of docs/oracle.md.
ADVERSARIAL = {
    "short-nat-busy-radio": dict(nat=45, wakeups=60, opens=300),
    "nat-below-the-tail": dict(nat=9, wakeups=0, pushes=0),
    "sweep-steps": dict(nat=90, sweep=60.0, wakeups=12),
    "evening-drop": dict(nat=1800, schedule=True, wakeups=2),
    "spread-outbound-loss": dict(nat=600, spread=0.3, outbound=True, loss=0.05, sweep=60.0),
    "3g-fach": dict(radio="3g", nat=90, wakeups=12),
    "3g-aro": dict(radio="3g-aro", nat=300, wakeups=2),
    "5g-inactive": dict(radio="5g-sa", nat=45, wakeups=12),
    "doze-pushes": dict(doze=True, nat=600, pushes=400, app="background"),
    "doze-outbound": dict(doze=True, nat=300, outbound=True, pushes=200, app="background"),
    "switching-outages": dict(switch=True, outages=24, nat=300, wakeups=12),
    "no-cpu-no-screen": dict(cpu=False, screen_radio=False, nat=300),
    "wifi-only-cpu": dict(radio="lte", switch=True, nat2=60, wifi_radio="wifi"),
}
