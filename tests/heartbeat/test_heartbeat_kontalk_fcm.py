"""Kontalk's multiplicative search and FCM's fixed per-network-type heartbeat."""
import pytest

from heartbeat_run import WALL0, Run
from pushsdk.heartbeat import HeartbeatContext, UnknownStrategyError, parse_strategy
from pushsdk.heartbeat.fcm import FcmStrategy
from pushsdk.heartbeat.kontalk import KontalkState, KontalkStrategy

KONTALK = KontalkStrategy()
FCM = FcmStrategy()
CTX = HeartbeatContext(now=0.0, wall_time=WALL0, network_key="wifi_home")


def test_kontalk_starts_at_30_min_and_stays_there_when_it_works():
    assert Run(KONTALK).beats(3) == [1800, 1800, 1800]


def test_kontalk_halves_on_failure_and_grows_by_half_on_success():
    run = Run(KONTALK, nat_timeout=1000)
    assert run.beats(8) == [1800, 900, 1350, 675, 1012.5, 506.25, 759.375, 1139.0625]
    assert [b.ok for b in run.log] == [False, True, False, True, False, True, True, False]
    assert run.interval() == 1139.0625 / 2


def test_kontalk_never_goes_below_5_min():
    run = Run(KONTALK, nat_timeout=200)
    assert run.beats(6) == [1800, 900, 450, 300, 300, 300]


def test_kontalk_remembers_the_interval_per_network():
    run = Run(KONTALK, network_key="wifi_a", nat_timeout=1000)
    run.beats(2)  # 1800 failed, 900 worked: 1350 next
    run.move_to("mobile_isp", "cellular")
    assert run.beats(1) == [1800]
    run.move_to("wifi_a")
    assert run.beats(1) == [1350]
    restarted = Run(KONTALK, network_key="wifi_a", memories=dict(run.memories))
    assert restarted.beats(1) == [675]
    assert run.memories["wifi_a"] == {"strategy": "kontalk", "interval": 675}


@pytest.mark.parametrize("memory, expected", [
    (None, 1800),
    ({"strategy": "kontalk", "interval": 700}, 700),
    ({"strategy": "kontalk", "interval": 10}, 300),
    ({"strategy": "kontalk", "interval": 1e9}, 1800),
    ({"strategy": "kontalk", "interval": float("inf")}, 1800),
    ({"strategy": "kontalk", "interval": "700"}, 1800),
    ({"strategy": "kontalk", "interval": True}, 1800),
    ({"strategy": "mars", "interval": 370}, 1800),
])
def test_kontalk_reads_memory_defensively(memory, expected):
    assert KONTALK.start(memory, CTX) == KontalkState(expected)


def test_kontalk_identity():
    assert parse_strategy("kontalk") == KONTALK
    assert (KONTALK.name, KONTALK.max_interval, KONTALK.ping_timeout) == ("kontalk", 1800, None)


@pytest.mark.parametrize("network_type, interval", [("wifi", 900), ("cellular", 1680)])
def test_fcm_uses_15_min_on_wifi_and_28_min_on_cellular(network_type, interval):
    run = Run(FCM, network_type=network_type, nat_timeout=1000)
    assert run.beats(4) == [interval] * 4  # failures teach it nothing
    assert run.memory is None


def test_fcm_identity():
    assert parse_strategy("fcm") == FCM
    assert (FCM.name, FCM.max_interval, FCM.ping_timeout) == ("fcm", 1680, 60)
    with pytest.raises(UnknownStrategyError):
        parse_strategy("fcm:60")
