"""The provider workload (simulator.workload): rates, audiences, bodies, shards."""
import collections
import json

import pytest

from simulator.scenario import Scenario
from simulator.workload import PushPlan, Workload

DAY_H = 24


@pytest.fixture(scope="module")
def specs():
    return Scenario.builtin("carrier-nat-5min").handset_specs(200, seed=11, hours=1)


def test_plans_are_sorted_and_deterministic(specs):
    workload = Workload()
    plans = workload.schedule(specs, DAY_H, seed=4)
    assert plans == workload.schedule(specs, DAY_H, seed=4)
    assert plans != workload.schedule(specs, DAY_H, seed=5)
    assert [p.t for p in plans] == sorted(p.t for p in plans)
    assert all(0 <= p.t < DAY_H * 3600 for p in plans)
    assert len({p.plan_id for p in plans}) == len(plans)


def test_direct_rate_and_alias_share(specs):
    plans = Workload(direct_per_handset_day=10, alias_share=0.3).schedule(specs, 2 * DAY_H, seed=1)
    direct = [p for p in plans if p.audience_kind in ("registration_id", "alias")]
    assert len(direct) == pytest.approx(200 * 10 * 2, rel=0.06)  # Poisson, 4000 ± 63
    aliases = [p for p in direct if p.audience_kind == "alias"]
    assert len(aliases) / len(direct) == pytest.approx(0.3, abs=0.03)
    for plan in aliases:
        (index,) = plan.targets
        assert plan.audience_value == f"user-{index}"
        assert plan.audience() == {"alias": [f"user-{index}"]}


def test_tag_and_broadcast_audiences(specs):
    workload = Workload(direct_per_handset_day=0, tag_per_day=300, broadcast_per_day=100,
                        cohorts=10)
    plans = workload.schedule(specs, DAY_H, seed=2)
    kinds = collections.Counter(p.audience_kind for p in plans)
    assert kinds["tag"] == pytest.approx(300, rel=0.2)
    assert kinds["all"] == pytest.approx(100, rel=0.3)
    for plan in plans:
        if plan.audience_kind == "tag":
            cohort = int(plan.audience_value.removeprefix("cohort-"))
            assert plan.targets == tuple(i for i in range(200) if i % 10 == cohort)
            assert plan.audience() == {"tag": [plan.audience_value]}
        else:
            assert plan.targets == tuple(range(200))
            assert plan.audience() == "all"


def test_attribute_mix(specs):
    workload = Workload(direct_per_handset_day=20, high_priority_share=0.25, collapse_share=0.2,
                        notification_share=0.6, ttl_choices=((86400, 0.5), (0, 0.5)),
                        payload_bytes=(100, 200))
    plans = workload.schedule(specs, DAY_H, seed=3)
    n = len(plans)
    assert sum(p.priority == "high" for p in plans) / n == pytest.approx(0.25, abs=0.03)
    assert sum(p.collapse_key is not None for p in plans) / n == pytest.approx(0.2, abs=0.03)
    assert sum(p.kind == "notification" for p in plans) / n == pytest.approx(0.6, abs=0.03)
    assert sum(p.ttl == 0 for p in plans) / n == pytest.approx(0.5, abs=0.03)
    assert {p.ttl for p in plans} == {0, 86400}
    assert all(100 <= p.payload_bytes <= 200 for p in plans)


def test_bodies_follow_the_contract(specs):
    plans = Workload(payload_bytes=(3000, 3000), collapse_share=1.0).schedule(specs, DAY_H, seed=6)
    ids = {spec.index: f"reg-{spec.index}" for spec in specs}
    for plan in plans:
        body = plan.body(ids)
        encoded = json.dumps(body)
        assert len(encoded.encode()) <= 4096
        assert body["options"]["ttl"] == plan.ttl
        assert body["options"]["priority"] in ("high", "normal")
        assert body["options"]["collapse_key"] in ("ck-0", "ck-1", "ck-2")
        if plan.kind == "notification":
            assert body["notification"]["extras"]["plan_id"] == plan.plan_id
            assert len(body["notification"]["body"]) == 3000
        else:
            assert body["message"]["data"]["plan_id"] == plan.plan_id
        if plan.audience_kind == "registration_id":
            assert body["audience"] == {"registration_id": [f"reg-{plan.targets[0]}"]}


def test_direct_pushes_need_registration_ids():
    plan = PushPlan(t=1.0, plan_id="d0.0", audience_kind="registration_id", audience_value=None,
                    targets=(0,), ttl=60, priority="normal", collapse_key=None,
                    kind="message", payload_bytes=10)
    with pytest.raises(ValueError, match="registration id"):
        plan.body()
    assert plan.audience(lambda i: f"r{i}") == {"registration_id": ["r0"]}
    assert "collapse_key" not in plan.body({0: "r0"})["options"]


def test_a_shard_schedules_exactly_its_part(specs):
    workload = Workload(tag_per_day=50, broadcast_per_day=20)
    everything = workload.schedule(specs, DAY_H, seed=8)
    shard = specs[50:100]
    part = workload.schedule(shard, DAY_H, seed=8)
    mine = set(range(50, 100))
    expected = []
    for plan in everything:
        targets = tuple(i for i in plan.targets if i in mine)
        if targets:
            expected.append((plan.t, plan.plan_id, targets, plan.ttl, plan.priority))
    assert [(p.t, p.plan_id, p.targets, p.ttl, p.priority) for p in part] == expected


def test_spec_tags_match_the_workload_cohorts():
    scenario = Scenario.builtin("mixed")
    spec = scenario.handset_spec(23, seed=0, hours=1)
    assert spec.tags[0] == f"cohort-{23 % scenario.workload.cohorts}"


@pytest.mark.parametrize("kwargs, field", [
    ({"alias_share": 1.5}, "alias_share"),
    ({"tag_per_day": -1}, "tag_per_day"),
    ({"cohorts": 0}, "cohorts"),
    ({"payload_bytes": (10, 5000)}, "payload_bytes"),
    ({"ttl_choices": ((60, 0.0),)}, "ttl_s"),
])
def test_bad_workloads_are_refused(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Workload(**kwargs)
