"""The named radio models and their registry.

=================  =======  ===================================================  =========
name               alias    source                                               E₁
=================  =======  ===================================================  =========
``lte-huang2012``  ``lte``  Huang et al., MobiSys 2012                           12.76 J
``lte-aro``                 AT&T ARO / Video Optimizer ``lte.conf``              11.37 J
``3g-huang2012``   ``3g``   Huang et al., MobiSys 2012, table 3                  7.38 J
``3g-aro``                  ARO ``i997.conf`` (Samsung i997 profile)             9.50 J
``wifi-huang2012`` ``wifi`` Huang et al., MobiSys 2012                           0.038 J
``wifi-aro``                ARO ``WiFi.conf`` / ``lte.conf`` Wi-Fi powers        0.10 J
=================  =======  ===================================================  =========

E₁ is the energy of one isolated small transfer. Figures and their status ([C] read in the
source, [A] arithmetic or this project's assumption, [R] quoted, primary table unchecked)
are in each model's ``notes`` and in docs/energy.md, which names every source.

``get_model(name)`` accepts a canonical name or an alias (case-insensitive) and raises
:class:`UnknownModelError` listing the known names; ``list_models()`` gives
``(name, description)`` pairs for ``pushsim models``.
"""
from __future__ import annotations

from simulator.radio.model import (
    NO_PROMOTION,
    FachRules,
    Promotion,
    RadioModel,
    TailPhase,
    TransferPower,
)

HUANG_2012 = (
    "J. Huang, F. Qian, A. Gerber, Z. M. Mao, S. Sen, O. Spatscheck, 'A Close Examination "
    "of Performance and Power Characteristics of 4G LTE Networks', MobiSys 2012"
)
ARO = (
    "AT&T ARO / Video Optimizer (github.com/attdevsupport/VideoOptimizer), "
    "ARO.Core/src/main/resources/{lte,i997,WiFi}.conf and the profile energy code"
)

# Link throughput assumed while a packet is on the air. LTE: Huang 2012's median LTE
# throughput (abstract: 13 Mbps down, 6 Mbps up). 3G and Wi-Fi: this project's assumption.
# For heartbeat-size packets the transfer energy is < 0.01 % of E₁ under any of these.
_LTE_LINK = {"up_mbps": 6.0, "down_mbps": 13.0}
_3G_LINK = {"up_mbps": 0.4, "down_mbps": 1.0}
_WIFI_LINK = {"up_mbps": 5.0, "down_mbps": 10.0}
_LINK_NOTE_3G_WIFI = (
    "[A] link throughput while transferring {up} Mbps up / {down} Mbps down: this project's "
    "assumption (turns bytes into seconds; negligible for heartbeat-size packets)"
)


def _lte_huang2012() -> RadioModel:
    on_ms, cycle_ms, on_power = 43.2, 1280.2, 0.5943
    return RadioModel(
        name="lte-huang2012",
        aliases=("lte",),
        technology="lte",
        description="LTE, Huang et al. MobiSys 2012: promotion + 11.576 s DRX tail",
        promotion=Promotion(power_w=1.2107, duration_s=0.2601),
        tail=(TailPhase("tail (DRX)", duration_s=11.576, power_w=1.0755),),
        transfer=TransferPower(
            beta_w=1.28804, alpha_up_w_per_mbps=0.43839, alpha_down_w_per_mbps=0.05197,
            **_LTE_LINK,
        ),
        idle_power_w=on_power * on_ms / cycle_ms,
        source=HUANG_2012,
        notes=(
            "[C] promotion IDLE -> CONNECTED 1.21 W / 0.26 s; decimals 1210.7 mW / 260.1 ms [A]",
            "[C] tail 11.576 s, tail base power 1060.0 mW, DRX on power 1680 mW",
            "[A] mean tail power 1075.5 mW = (1 ms x 1680.1 + 39 ms x 1060) / 40 ms, with the "
            "1 ms DRX on-duration [R] in a 40 ms long-DRX cycle",
            "[C] isolated small transfer 12.76 J = 1210.7 mW x 0.2601 s + 1075.5 mW x 11.576 s [A]",
            "[C] alpha_u 438.39, alpha_d 51.97 mW/Mbps; [R] beta 1288.04 mW",
            "[C] link throughput 6 Mbps up / 13 Mbps down: Huang 2012's median LTE figures",
            "[C] IDLE paging 594.3 mW for 43.2 ms every 1280.2 ms; mean 20.05 mW [A]",
        ),
    )


def _lte_aro() -> RadioModel:
    ping, p_ping, p_tail = 0.002, 1.68, 1.06

    def drx_mean(period: float) -> float:  # ARO bills a DRX period as ping + tail power
        return (ping * p_ping + (period - ping) * p_tail) / period

    return RadioModel(
        name="lte-aro",
        technology="lte",
        description="LTE, AT&T ARO default profile: promotion + 0.1 s CR + DRX tail (10.12 s)",
        promotion=Promotion(power_w=1.21, duration_s=0.26),
        tail=(
            TailPhase("continuous reception", duration_s=0.1, power_w=1.2),
            TailPhase("short DRX", duration_s=0.02, power_w=drx_mean(0.02)),
            TailPhase("long DRX", duration_s=10.0, power_w=drx_mean(0.04)),
        ),
        transfer=TransferPower(
            beta_w=1.2, alpha_up_w_per_mbps=0.43839, alpha_down_w_per_mbps=0.05197, **_LTE_LINK
        ),
        idle_power_w=0.594 * 0.043 / 1.28,
        source=ARO + " (lte.conf)",
        notes=(
            "[C] T_PROMOTION 0.26 s at P_PROMOTION 1.21 W",
            "[C] INACTIVITY_TIMER 0.1 s billed at LTE_BETA 1.2 W (ARO's LTE_CR_TAIL state)",
            "[C] T_SHORT_DRX 0.02 s, T_LONG_DRX 10 s; DRX ping 0.002 s at 1.68 W every 0.02 s "
            "(short) / 0.04 s (long), P_TAIL 1.06 W between pings",
            "[A] mean short-DRX power 1.122 W, long-DRX 1.091 W; tail 10.12 s; E1 = 11.37 J",
            "[C] alpha_up 438.39, alpha_down 51.97 mW/Mbps, beta 1.2 W",
            "[A] link throughput 6 Mbps up / 13 Mbps down (Huang 2012's medians, not ARO's "
            "windowed throughput)",
            "[C] idle ping 0.043 s at 0.594 W every 1.28 s, P_IDLE 0; mean 19.96 mW [A]",
        ),
    )


def _3g_huang2012() -> RadioModel:
    promotion = Promotion(power_w=0.6594, duration_s=0.5821)
    return RadioModel(
        name="3g-huang2012",
        aliases=("3g",),
        technology="3g",
        description="3G UMTS, Huang et al. MobiSys 2012 table 3: promotion + DCH + FACH tail",
        promotion=promotion,
        tail=(
            TailPhase("DCH", duration_s=8.0882, power_w=0.8039),
            TailPhase("FACH", duration_s=0.8242, power_w=0.6013),
        ),
        transfer=TransferPower(beta_w=0.8039, **_3G_LINK),
        idle_power_w=0.0,
        fach=FachRules(phase=1, promotion=promotion),
        source=HUANG_2012 + " (table 3); FACH rules from " + ARO,
        notes=(
            "[R] promotion 659.4 mW x 582.1 ms; DCH tail 803.9 mW x 8088.2 ms; FACH tail "
            "601.3 mW x 824.2 ms (Huang 2012 table 3)",
            "[C] isolated small transfer 7.38 J; the table's sum 7.382 J [A]",
            "[A] FACH -> DCH promotion taken equal to IDLE -> DCH (no Huang figure; ARO's "
            "i997 costs 1.2 J vs 1.3 J for the two, i.e. about the same)",
            "[C] FACH -> DCH only when the RLC buffer exceeds 543 B up / 475 B down (ARO)",
            "[A] transfer on DCH at the DCH power (no 3G alpha/beta in the reference)",
            _LINK_NOTE_3G_WIFI.format(up=0.4, down=1.0),
            "[A] FACH transfers at 32 kbps each way, drawing the FACH power",
            "[A] IDLE paging power 0: no 3G paging figure in the reference (ARO i997 has 0 W)",
        ),
    )


def _3g_aro() -> RadioModel:
    return RadioModel(
        name="3g-aro",
        technology="3g",
        description="3G UMTS, AT&T ARO Samsung i997 profile: DCH 4 s + FACH 10 s tail",
        promotion=Promotion(power_w=0.65, duration_s=2.0),
        tail=(
            TailPhase("DCH", duration_s=4.0, power_w=1.30),
            TailPhase("FACH", duration_s=10.0, power_w=0.30),
        ),
        transfer=TransferPower(beta_w=1.30, **_3G_LINK),
        idle_power_w=0.0,
        fach=FachRules(phase=1, promotion=Promotion(power_w=0.80, duration_s=1.5)),
        source=ARO + " (i997.conf: the Samsung i997 profile, not ARO's hard-coded 3G default)",
        notes=(
            "[C] DCH_FACH_TIMER 4 s, FACH_IDLE_TIMER 10 s; POWER_DCH 1.30 W, POWER_FACH 0.30 W",
            "[C] IDLE -> DCH promotion: average delay 2.0 s at POWER_IDLE_DCH 0.65 W",
            "[A] isolated small transfer 1.3 + 5.2 + 3.0 = 9.50 J",
            "[C] FACH -> DCH promotion: average delay 1.5 s at POWER_FACH_DCH 0.80 W",
            "[C] RLC thresholds 543 B up (RLC_UL_TH) / 475 B down (RLC_DL_TH)",
            "[A] average promotion delays only (ARO's min/max cases not modelled); ARO's "
            "DCH-timer reset rule (320 B in 0.3 s) not modelled: every packet restarts timers",
            "[A] transfer on DCH at POWER_DCH (ARO bills 3G states by time, not throughput)",
            _LINK_NOTE_3G_WIFI.format(up=0.4, down=1.0),
            "[A] FACH transfers at 32 kbps each way, drawing POWER_FACH",
            "[C] POWER_IDLE 0 W",
        ),
    )


def _wifi_huang2012() -> RadioModel:
    return RadioModel(
        name="wifi-huang2012",
        aliases=("wifi",),
        technology="wifi",
        description="Wi-Fi, Huang et al. MobiSys 2012: 79 ms promotion + 238 ms tail",
        promotion=Promotion(power_w=0.1244, duration_s=0.0791),
        tail=(TailPhase("tail", duration_s=0.2381, power_w=0.1193),),
        transfer=TransferPower(beta_w=0.403, **_WIFI_LINK),
        idle_power_w=0.02,
        source=HUANG_2012 + "; transfer and standby powers from " + ARO,
        notes=(
            "[R] promotion 124.4 mW x 79.1 ms; tail 119.3 mW x 238.1 ms",
            "[C] isolated small transfer 0.04 J; the sum 0.0382 J [A]",
            "[A] transfer power 0.403 W borrowed from ARO's POWER_WIFI_ACTIVE [C in ARO]",
            _LINK_NOTE_3G_WIFI.format(up=5.0, down=10.0),
            "[A] idle baseline 20 mW borrowed from ARO's POWER_WIFI_STANDBY; Huang's PSM "
            "beacon figures (77.2 mW, period 308.6 ms [R]) lack the on-time",
        ),
    )


def _wifi_aro() -> RadioModel:
    return RadioModel(
        name="wifi-aro",
        technology="wifi",
        description="Wi-Fi, AT&T ARO: no promotion, 0.25 s tail at 0.403 W",
        promotion=NO_PROMOTION,
        tail=(TailPhase("tail", duration_s=0.25, power_w=0.403),),
        transfer=TransferPower(beta_w=0.403, **_WIFI_LINK),
        idle_power_w=0.02,
        source=ARO + " (WiFi.conf WIFI_TAIL_TIME; POWER_WIFI_ACTIVE / _STANDBY)",
        notes=(
            "[C] WIFI_TAIL_TIME 0.25 s at POWER_WIFI_ACTIVE 0.403 W; no promotion state",
            "[A] isolated small transfer 0.25 s x 0.403 W = 0.10 J",
            "[C] transfer at POWER_WIFI_ACTIVE 0.403 W",
            _LINK_NOTE_3G_WIFI.format(up=5.0, down=10.0),
            "[C] POWER_WIFI_STANDBY 0.02 W (idle baseline)",
        ),
    )


NARAYANAN_2021 = (
    "A. Narayanan et al., 'A Variegated Look at 5G in the Wild: Performance, Power, and QoE "
    "Implications', SIGCOMM 2021 (artifact github.com/SIGCOMM21-5G/artifact, MI-RRC-Power)"
)
_NR_NOTE = (
    "[A] assumption: the powers and the split of the tail are this project's; the paper's "
    "RRC power table was not reachable, only the facts marked [C] were read"
)


def _nr_sa() -> RadioModel:
    # SA 5G (low/mid band) with RRC_INACTIVE. Shapes from 3GPP TS 38.331 (CONNECTED with
    # C-DRX, then INACTIVE, then IDLE); durations chosen so that the radio is back in IDLE
    # 18.3 s after an isolated packet, inside the 20 s the SIGCOMM'21 artifact observed.
    return RadioModel(
        name="5g-sa",
        technology="5g",
        description="5G NR SA with RRC_INACTIVE (assumed powers; IDLE within 20 s as measured)",
        promotion=Promotion(power_w=1.2, duration_s=0.3),
        tail=(
            TailPhase("CONNECTED (C-DRX)", duration_s=10.0, power_w=1.1),
            TailPhase("RRC_INACTIVE", duration_s=8.0, power_w=0.03),
        ),
        transfer=TransferPower(beta_w=1.3, up_mbps=50.0, down_mbps=200.0),
        idle_power_w=0.02,
        inactive_phase=1,
        resume=Promotion(power_w=1.2, duration_s=0.1),
        source=NARAYANAN_2021 + "; RRC states from 3GPP TS 38.331",
        notes=(
            "[C] NR adds RRC_INACTIVE to CONNECTED and IDLE (3GPP TS 38.331 §4.2.1)",
            "[C] phones return to RRC_IDLE within 20 s after a packet (artifact, MI-RRC-Power "
            "README: a packet every 20 s makes the phone enter CONNECTED each time)",
            "[A] assumption: promotion IDLE -> CONNECTED 1.2 W x 0.3 s; C-DRX tail 10 s at 1.1 W; "
            "INACTIVE 8 s at 30 mW; RRC Resume from INACTIVE 1.2 W x 0.1 s",
            "[A] assumption: transfer 1.3 W; link 50 Mbps up / 200 Mbps down; idle paging 20 mW",
            _NR_NOTE,
        ),
    )


def _nr_nsa_mmwave() -> RadioModel:
    # NSA rides the LTE RRC state machine (no INACTIVE): the LTE anchor's tail (Huang 2012)
    # plus the NR leg's, which draws more for mmWave.
    return RadioModel(
        name="5g-nsa-mmwave",
        technology="5g",
        description="5G NR NSA mmWave on an LTE anchor (assumed NR leg on Huang's LTE tail)",
        promotion=Promotion(power_w=1.8, duration_s=0.5),
        tail=(TailPhase("LTE + NR C-DRX", duration_s=11.576, power_w=1.5),),
        transfer=TransferPower(beta_w=2.0, up_mbps=60.0, down_mbps=1000.0),
        idle_power_w=0.5943 * 43.2 / 1280.2,
        source=NARAYANAN_2021 + "; LTE anchor from " + HUANG_2012,
        notes=(
            "[C] NSA 5G uses the LTE RRC state machine; NR has no RRC_INACTIVE under NSA",
            "[C] LTE is more energy-efficient than mmWave NR for low-rate traffic (Signals "
            "Research Group; Narayanan 2021): E1 here exceeds LTE's",
            "[A] tail 11.576 s: the LTE anchor's (Huang 2012)",
            "[A] assumption: promotion 1.8 W x 0.5 s (LTE setup + NR leg addition); "
            "tail 1.5 W (LTE DRX "
            "1.0755 W + ~0.42 W NR leg); transfer 2.0 W; link 60 / 1000 Mbps",
            _NR_NOTE,
        ),
    )


#: Canonical name -> model.
MODELS: dict[str, RadioModel] = {
    model.name: model
    for model in (
        _lte_huang2012(), _lte_aro(), _3g_huang2012(), _3g_aro(), _wifi_huang2012(), _wifi_aro(),
        _nr_sa(), _nr_nsa_mmwave(),
    )
}

#: Alias -> canonical name.
ALIASES: dict[str, str] = {alias: m.name for m in MODELS.values() for alias in m.aliases}


class UnknownModelError(ValueError):
    """A radio model name that is neither a canonical name nor an alias."""


def known_names() -> str:
    """``"lte (= lte-huang2012), lte-aro, ..."``: for error messages and help texts."""
    return ", ".join(
        f"{m.aliases[0]} (= {m.name})" if m.aliases else m.name for m in MODELS.values()
    )


def get_model(name: str) -> RadioModel:
    """The model called ``name`` (canonical or alias, case-insensitive)."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    try:
        return MODELS[key]
    except KeyError:
        raise UnknownModelError(
            f"unknown radio model {name!r}; known models: {known_names()}"
        ) from None


def list_models() -> list[tuple[str, str]]:
    """(canonical name, one-line description with aliases and E₁) for every model."""
    rows = []
    for model in MODELS.values():
        alias = f" [alias: {', '.join(model.aliases)}]" if model.aliases else ""
        e1 = model.isolated_energy()
        rows.append((model.name, f"{model.description}; E1 = {e1:.4g} J{alias}"))
    return rows
