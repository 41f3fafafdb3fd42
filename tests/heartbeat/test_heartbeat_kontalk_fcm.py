"""Kontalk (as shipped, and issue 344's design) and FCM's per-network-type heartbeat."""
import pytest

from heartbeat_run import WALL0, Run
from pushsdk.heartbeat import HeartbeatContext, UnknownStrategyError, parse_strategy
from pushsdk.heartbeat.fcm import FcmStrategy
from pushsdk.heartbeat.kontalk import Kontalk344Strategy, KontalkState, KontalkStrategy

KONTALK = Kontalk344Strategy()
SHIPPED = KontalkStrategy()
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
    assert run.memories["wifi_a"] == {"strategy": "kontalk-344", "interval": 675}


@pytest.mark.parametrize("memory, expected", [
    (None, 1800),
    ({"strategy": "kontalk-344", "interval": 700}, 700),
    ({"strategy": "kontalk-344", "interval": 10}, 300),
    ({"strategy": "kontalk-344", "interval": 1e9}, 1800),
    ({"strategy": "kontalk-344", "interval": float("inf")}, 1800),
    ({"strategy": "kontalk-344", "interval": "700"}, 1800),
    ({"strategy": "kontalk-344", "interval": True}, 1800),
    ({"strategy": "mars", "interval": 370}, 1800),
])
def test_kontalk_reads_memory_defensively(memory, expected):
    assert KONTALK.start(memory, CTX) == KontalkState(expected)


def test_kontalk_identity():
    assert parse_strategy("kontalk-344") == KONTALK
    assert (KONTALK.name, KONTALK.max_interval, KONTALK.ping_timeout) == ("kontalk-344", 1800, None)
    assert parse_strategy("kontalk") == SHIPPED and SHIPPED.name == "kontalk"


def test_shipped_kontalk_halves_until_it_works_then_tries_one_increase_after_a_span():
    run = Run(SHIPPED, nat_timeout=400)
    assert [round(b) for b in run.beats(10)] == [1800, 900, 450, 225, 225, 338, 338, 506, 338,
                                                338]
    # 225 worked twice (the first success only starts the span); after a success span of 225 s
    # (the backoff defaults to the interval) it tried 337.5, which held: backoff = 337.5.
    # 506 failed: back to 337.5 and the backoff grows 1.5x.
    assert run.memory == {"strategy": "kontalk", "interval": 337.5, "next_increase": 506.25}


def test_shipped_kontalk_keeps_90_s_as_its_floor():
    run = Run(SHIPPED, nat_timeout=60)
    assert [round(b) for b in run.beats(7)] == [1800, 900, 450, 225, 112, 90, 90]


def test_shipped_kontalk_never_grows_without_a_success_span():
    run = Run(SHIPPED, nat_timeout=1000)
    assert run.beats(2) == [1800, 900]  # 900 worked once: no span yet
    run.beat()
    assert run.interval() == 1350  # two successes 900 s apart >= backoff 900: try 1350


@pytest.mark.parametrize("network_type, interval", [("wifi", 900), ("cellular", 1680)])
def test_fcm_uses_15_min_on_wifi_and_28_min_on_cellular(network_type, interval):
    run = Run(FCM, network_type=network_type, nat_timeout=1000)
    assert run.beats(4) == [interval] * 4  # failures teach it nothing
    assert run.memory is None


def test_fcm_identity():
    assert parse_strategy("fcm") == FCM
    assert (FCM.name, FCM.max_interval, FCM.ping_timeout) == ("fcm", 1680, 60)
    assert FCM.doze_exempt  # Google Play services' connection is on the Doze whitelist
    for bad in ("fcm:60", "fcm:cellular=10", "fcm:speed=3", "fcm:wifi=-1", "fcm:server=0.5"):
        with pytest.raises(UnknownStrategyError):
            parse_strategy(bad)


def test_fcm_takes_the_client_and_server_intervals_of_its_source():
    fcm = parse_strategy("fcm:cellular=600,ack=30")
    assert fcm.name == "fcm:cellular=600,ack=30" and parse_strategy(fcm.name) == fcm
    assert Run(fcm, network_type="cellular").beats(2) == [600, 600]
    assert fcm.ping_timeout == 30
    server = parse_strategy("fcm:server=420")
    assert Run(server, network_type="wifi").beats(1) == [420] == Run(
        server, network_type="cellular").beats(1)
