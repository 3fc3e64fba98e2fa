"""Launch through the core functions against the emulator: tags, API economy, capacity fallback."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from annex_common.aws import make_clients
from annex_common.stack import read_stack
from annex_common.bundle import Caps, load_bundle
from annex_user.context import AnnexContext
from annex_user.launch import LaunchRequest, execute_launch, plan_launch
from templates import contract
from tests.flows import PROJECT, USER, deploy_stack, issue_bundle, write_pool


def scientist_context(tmp_path, caps=Caps(32, 168, 500.0)):
    admin = make_clients(region="us-east-1")
    deploy_stack(admin)
    issue_bundle(admin, tmp_path / "b.toml", caps=caps)
    bundle = load_bundle(tmp_path / "b.toml")
    clients = make_clients(region="us-east-1", access_key_id=bundle.aws_access_key_id,
                           secret_access_key=bundle.aws_secret_access_key)
    calls: Counter[str] = Counter()
    # Counted as they leave for the emulator (retries included).
    clients.session.events.register("before-send", lambda request, **_: calls.update([request.url.split("?")[0]]))
    clients.session.events.register("before-call", lambda model, **_: calls.update([f"op:{model.name}"]))
    ctx = AnnexContext(bundle, clients, read_stack(clients, bundle.stack_name), _now())
    return ctx, calls, write_pool(tmp_path / "pool")


def _now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).replace(microsecond=0)


def annex_instances(annex: str) -> list[dict]:
    ec2 = make_clients(region="us-east-1").ec2
    return [
        i for page in ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": f"tag:{contract.TAG_ANNEX_NAME}", "Values": [annex]},
                     {"Name": "instance-state-name", "Values": ["pending", "running"]}])
        for r in page["Reservations"] for i in r["Instances"]
    ]


def test_launch_tags_every_instance_on_create_with_one_fleet_call(aws, tmp_path):
    ctx, calls, pool = scientist_context(tmp_path)
    plan = plan_launch(ctx, LaunchRequest(PROJECT, ctx.now + timedelta(hours=72), 16, annex_name="a16",
                                          condor_config=str(pool.condor_config)))
    calls.clear()
    result = execute_launch(ctx, plan, lambda _l: None)
    assert len(result.instance_ids) == 16 and result.shortfall == 0
    assert calls["op:CreateFleet"] == 1
    assert calls["op:CreateTags"] == 0  # tags go on at creation, never afterwards
    assert calls["op:PutObject"] == 3
    instances = annex_instances("a16")
    assert sorted(i["InstanceId"] for i in instances) == sorted(result.instance_ids)
    expected = {
        contract.TAG_ANNEX_NAME: "a16",
        contract.TAG_PROJECT: PROJECT,
        contract.TAG_EXPIRY: (ctx.now + timedelta(hours=72)).strftime(contract.EXPIRY_FORMAT),
        contract.TAG_IDLE: "900",
        contract.TAG_OWNER: USER,
    }
    for instance in instances:
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        assert {k: tags.get(k) for k in expected} == expected
        assert instance["SubnetId"] in ctx.stack.subnets


def test_launch_cost_is_constant_plus_one_fleet_call_per_thousand(aws, tmp_path):
    ctx, calls, pool = scientist_context(tmp_path, caps=Caps(5000, 168, 1e7))
    plan = plan_launch(ctx, LaunchRequest(PROJECT, ctx.now + timedelta(hours=5), 1500, annex_name="big",
                                          condor_config=str(pool.condor_config)))
    calls.clear()
    result = execute_launch(ctx, plan, lambda _l: None)
    assert len(set(result.instance_ids)) == 1500
    assert calls["op:CreateFleet"] == 2
    assert sum(v for k, v in calls.items() if k.startswith("op:")) == 3 + 2


def test_capacity_errors_fall_back_to_the_remaining_pools(aws, tmp_path):
    """The emulator never reports a capacity shortage (its CreateFleet always fills the request from
    the first override), so this test makes the first fleet request come back short, with an
    InsufficientInstanceCapacity error for one pool, by editing the request and the parsed response
    on the client side. Everything else is the real emulator."""
    ctx, calls, pool = scientist_context(tmp_path)
    requests: list[dict] = []
    first_pool: list[tuple[str, str]] = []

    def shorten_first_request(params, **_):
        requests.append(params)
        if len(requests) == 1:
            spec = params["TargetCapacitySpecification"]
            spec["TotalTargetCapacity"] = spec["OnDemandTargetCapacity"] = 10
            override = params["LaunchTemplateConfigs"][0]["Overrides"][0]
            first_pool.append((override["InstanceType"], override["SubnetId"]))

    def report_shortage(parsed, **_):
        if len(requests) == 1:
            itype, subnet = first_pool[0]
            parsed.setdefault("Errors", []).append({
                "LaunchTemplateAndOverrides": {"Overrides": {"InstanceType": itype, "SubnetId": subnet}},
                "Lifecycle": "on-demand",
                "ErrorCode": "InsufficientInstanceCapacity",
                "ErrorMessage": "We currently do not have sufficient capacity in the Availability Zone you requested.",
            })

    ctx.clients.ec2.meta.events.register("provide-client-params.ec2.CreateFleet", shorten_first_request)
    ctx.clients.ec2.meta.events.register("after-call.ec2.CreateFleet", report_shortage)
    plan = plan_launch(ctx, LaunchRequest(PROJECT, ctx.now + timedelta(hours=5), 16, annex_name="short",
                                          condor_config=str(pool.condor_config)))
    lines: list[str] = []
    result = execute_launch(ctx, plan, lines.append)
    assert len(requests) == 2 and result.rounds == 2
    assert len(result.instance_ids) == 16 and len(annex_instances("short")) == 16
    assert requests[1]["TargetCapacitySpecification"]["TotalTargetCapacity"] == 6
    second_pools = {(o["InstanceType"], o["SubnetId"]) for c in requests[1]["LaunchTemplateConfigs"] for o in c["Overrides"]}
    assert first_pool[0] not in second_pools and len(second_pools) == len(plan.pools) - 1
    assert any("no capacity" in line for line in lines)


def test_every_pool_failing_reports_the_shortfall(aws, tmp_path):
    """As above, the shortage is made on the client side: every request comes back empty with a
    capacity error for each pool it named."""
    ctx, calls, pool = scientist_context(tmp_path)

    def nothing_available(params, **_):
        params["TargetCapacitySpecification"]["TotalTargetCapacity"] = 0
        params["TargetCapacitySpecification"]["OnDemandTargetCapacity"] = 0
        nothing_available.pools = [(o["InstanceType"], o["SubnetId"]) for c in params["LaunchTemplateConfigs"] for o in c["Overrides"]]

    def all_short(parsed, **_):
        parsed["Instances"] = []
        parsed["Errors"] = [
            {"LaunchTemplateAndOverrides": {"Overrides": {"InstanceType": t, "SubnetId": s}},
             "ErrorCode": "InsufficientInstanceCapacity", "ErrorMessage": "none"}
            for t, s in nothing_available.pools
        ]

    ctx.clients.ec2.meta.events.register("provide-client-params.ec2.CreateFleet", nothing_available)
    ctx.clients.ec2.meta.events.register("after-call.ec2.CreateFleet", all_short)
    plan = plan_launch(ctx, LaunchRequest(PROJECT, ctx.now + timedelta(hours=5), 4, annex_name="none",
                                          condor_config=str(pool.condor_config)))
    result = execute_launch(ctx, plan, lambda _l: None)
    assert result.instance_ids == [] and result.shortfall == 4 and result.rounds == 1
    assert len(result.capacity_errors) == len(plan.pools)
    # Nothing launched, so the uploaded configuration was taken back.
    prefix = contract.annex_prefix(PROJECT, "none")
    assert ctx.clients.s3.list_objects_v2(Bucket=ctx.stack.bucket, Prefix=prefix).get("KeyCount", 0) == 0


def test_spot_launch_uses_price_capacity_optimized(aws, tmp_path):
    ctx, calls, pool = scientist_context(tmp_path)
    seen: list[dict] = []
    ctx.clients.ec2.meta.events.register("provide-client-params.ec2.CreateFleet", lambda params, **_: seen.append(dict(params)))
    plan = plan_launch(ctx, LaunchRequest(PROJECT, ctx.now + timedelta(hours=5), 3, annex_name="spotty", spot=True,
                                          condor_config=str(pool.condor_config)))
    assert plan.prices.market == "spot"
    result = execute_launch(ctx, plan, lambda _l: None)
    assert len(result.instance_ids) == 3
    assert seen[0]["SpotOptions"] == {"AllocationStrategy": "price-capacity-optimized"}
    assert seen[0]["TargetCapacitySpecification"]["DefaultTargetCapacityType"] == "spot"


def test_spend_cap_refuses_launch_and_extension_naming_the_cap(aws, tmp_path):
    from annex_common.errors import BadInput
    from annex_user.manage import extend_lease

    ctx, calls, pool = scientist_context(tmp_path, caps=Caps(32, 168, 10.0))
    with pytest.raises(BadInput) as caught:
        plan_launch(ctx, LaunchRequest(PROJECT, ctx.now + timedelta(hours=72), 4, annex_name="dear",
                                       condor_config=str(pool.condor_config)))
    assert "max_spend_usd" in caught.value.what
    assert annex_instances("dear") == []
    plan = plan_launch(ctx, LaunchRequest(PROJECT, ctx.now + timedelta(hours=24), 2, annex_name="cheap",
                                          condor_config=str(pool.condor_config)))
    assert plan.most_cost <= 10.0
    execute_launch(ctx, plan, lambda _l: None)
    with pytest.raises(BadInput) as caught:
        extend_lease(ctx, annex_name="cheap", new_expiry=ctx.now + timedelta(hours=72),
                     condor_config=str(pool.condor_config))
    assert "max_spend_usd" in caught.value.what
    expiries = {t["Value"] for i in annex_instances("cheap") for t in i["Tags"] if t["Key"] == contract.TAG_EXPIRY}
    assert expiries == {(ctx.now + timedelta(hours=24)).strftime(contract.EXPIRY_FORMAT)}
