"""A launch as condor_annex makes it, through the broker: tags on create, the calls it costs each
side, capacity fallback, spot, the spend cap, and partial fleets.

The emulator never reports a capacity shortage (its CreateFleet fills every request from the first
override) and runs the broker in a child process, where a test cannot reach its EC2 client. The
fallback tests therefore run the broker's own fleet module and launch operation as components,
in this process, over the real emulator, and make the shortage by editing CreateFleet's request
and answer on that client. Everything else is the real path: the client's Invoke, the broker's
code from the deployed zip, and its role.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from annex_cloud.broker.ops import Call, launch
from annex_cloud.broker.settings import BrokerSettings
from annex_cloud.caps import Caps
from annex_cloud.fleet import FleetSpec, run_fleet
from annex_cloud.registry import Registry
from annex_common.aws import make_clients
from annex_common.bundle import load_bundle
from annex_common.errors import BadInput
from annex_user.context import open_context
from annex_user.launch import LaunchRequest, execute_launch, plan_launch
from annex_user.manage import extend_lease, extend_params, terminate_annex
from templates import contract
from tests.flows import PROJECT, USER, deploy_stack, issue_bundle, write_pool

CAPACITY = "InsufficientInstanceCapacity"


def scientist(tmp_path, caps=Caps(32, 168, 500.0)):
    admin = make_clients(region="us-east-1")
    outputs = deploy_stack(admin).outputs
    issue_bundle(admin, tmp_path / "b.toml", caps=caps)
    return open_context(tmp_path / "b.toml"), write_pool(tmp_path / "pool"), outputs


def request(pool, name: str, count: int, hours: float = 5, **extra) -> LaunchRequest:
    return LaunchRequest(PROJECT, datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=hours), count,
                         annex_name=name, **extra)


def annex_instances(annex: str) -> list[dict]:
    ec2 = make_clients(region="us-east-1").ec2
    return [
        i for page in ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": f"tag:{contract.TAG_ANNEX_NAME}", "Values": [annex]},
                     {"Name": "instance-state-name", "Values": ["pending", "running"]}])
        for r in page["Reservations"] for i in r["Instances"]
    ]


def split_calls(calls: list[tuple[str, str, str]], user_key: str) -> tuple[Counter, Counter]:
    """(the scientist's calls, the broker's calls) by operation; the broker signs with its role's
    temporary keys, the scientist with her user's key. Her identity proof is signed with her key
    but sent to STS by the broker: it counts as the broker's."""
    mine = Counter(op for key, _service, op in calls if key == user_key and op != "GetCallerIdentity")
    broker = Counter(op for key, _service, op in calls if key.startswith("ASIA") or op == "GetCallerIdentity")
    return mine, broker


# --- the real path ---------------------------------------------------------------------------------


def test_launch_tags_every_instance_on_create_with_two_client_calls(aws, tmp_path):
    ctx, pool, outputs = scientist(tmp_path)
    start = aws.log_offset()
    plan = plan_launch(ctx, request(pool, "a16", 16, hours=72))
    result = execute_launch(ctx, plan)
    mine, broker = split_calls(aws.calls_since(start), ctx.bundle.aws_access_key_id)
    assert mine == Counter({"Invoke": 2})  # plan, then launch: nothing else leaves her machine
    assert broker["CreateFleet"] == 1 and broker["CreateTags"] == 0  # tags ride on the creating call
    assert broker["RunInstances"] == 0 and broker["PUT object"] == 2  # annex.env and the token
    assert len(result.instance_ids) == 16 and result.shortfall == 0
    instances = annex_instances("a16")
    assert sorted(i["InstanceId"] for i in instances) == sorted(result.instance_ids)
    expected = {
        contract.TAG_ANNEX_NAME: "a16",
        contract.TAG_PROJECT: PROJECT,
        contract.TAG_EXPIRY: plan.expiry.strftime(contract.EXPIRY_FORMAT),
        contract.TAG_IDLE: "900",
        contract.TAG_OWNER: USER,
    }
    subnets = outputs[contract.OUT_SUBNETS].split(",")
    for instance in instances:
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        assert {k: tags.get(k) for k in expected} == expected
        assert instance["SubnetId"] in subnets


def test_launch_cost_is_constant_plus_one_fleet_call_per_thousand(aws, tmp_path):
    ctx, pool, _outputs = scientist(tmp_path, caps=Caps(5000, 168, 1e7))
    plan = plan_launch(ctx, request(pool, "big", 1500))
    start = aws.log_offset()
    result = execute_launch(ctx, plan)
    mine, broker = split_calls(aws.calls_since(start), ctx.bundle.aws_access_key_id)
    assert len(set(result.instance_ids)) == 1500
    assert mine == Counter({"Invoke": 1})
    assert broker["CreateFleet"] == 2
    small = plan_launch(ctx, request(pool, "small", 10))
    start = aws.log_offset()
    execute_launch(ctx, small)
    _, broker_small = split_calls(aws.calls_since(start), ctx.bundle.aws_access_key_id)
    # The same calls but for the second thousand's round: the renewal of the project's lock that
    # comes before it, its CreateFleet, and the record of what it launched (kept at once, so a
    # concurrent request counts it even before EC2 lists it).
    assert broker - broker_small == Counter({"UpdateItem": 1, "CreateFleet": 1, "PutItem": 1})


def test_spend_cap_refuses_launch_and_extension_naming_the_cap(aws, tmp_path):
    ctx, pool, _outputs = scientist(tmp_path, caps=Caps(32, 168, 10.0))
    with pytest.raises(BadInput) as caught:
        plan_launch(ctx, request(pool, "dear", 4, hours=72))
    assert "spend cap of $10.00" in caught.value.what
    assert annex_instances("dear") == []
    plan = plan_launch(ctx, request(pool, "cheap", 2, hours=24))
    assert plan.most_cost <= 10.0
    execute_launch(ctx, plan)
    with pytest.raises(BadInput) as caught:
        extend_lease(ctx, extend_params(ctx, "cheap", ctx.now + timedelta(hours=72), False))
    assert "spend cap of $10.00" in caught.value.what
    expiries = {t["Value"] for i in annex_instances("cheap") for t in i["Tags"] if t["Key"] == contract.TAG_EXPIRY}
    assert expiries == {plan.expiry.strftime(contract.EXPIRY_FORMAT)}


def test_extend_never_shortens_unless_asked(aws, tmp_path):
    ctx, pool, _outputs = scientist(tmp_path)
    plan = plan_launch(ctx, request(pool, "long", 2, hours=72))
    execute_launch(ctx, plan)
    with pytest.raises(BadInput) as caught:
        extend_lease(ctx, extend_params(ctx, "long", ctx.now + timedelta(hours=48), False))
    assert "earlier than today's" in caught.value.what and "--shorten" in caught.value.next_step
    shorter = extend_lease(ctx, extend_params(ctx, "long", ctx.now + timedelta(hours=48), True))
    assert shorter.answer["shortens"] is True


def launched_fleets(ec2, template_ids: set[str]) -> list[dict]:
    """The fleets made from the stack's launch templates, as EC2 stored them (request included)."""
    return [f for f in ec2.describe_fleets()["Fleets"]
            if {c["LaunchTemplateSpecification"]["LaunchTemplateId"] for c in f["LaunchTemplateConfigs"]} & template_ids]


def test_spot_fleets_use_price_capacity_optimized_and_cap_at_the_on_demand_price(aws, clients, tmp_path):
    """Through Invoke: the broker's CreateFleet, as EC2 stored it."""
    ctx, pool, outputs = scientist(tmp_path)
    plan = plan_launch(ctx, request(pool, "spotty", 3, spot=True))
    result = execute_launch(ctx, plan)
    assert len(result.instance_ids) == 3
    templates = set(dict(p.split("=", 1) for p in outputs[contract.OUT_LAUNCH_TEMPLATES].split(",")).values())
    (fleet,) = launched_fleets(clients.ec2, templates)
    assert fleet["SpotOptions"]["AllocationStrategy"] == "price-capacity-optimized"
    assert fleet["TargetCapacitySpecification"]["DefaultTargetCapacityType"] == "spot"
    prices = result.answer["prices"]
    for config in fleet["LaunchTemplateConfigs"]:
        for override in config["Overrides"]:
            assert float(override["MaxPrice"]) == pytest.approx(prices[override["InstanceType"]])
            assert set(override) == {"InstanceType", "SubnetId", "Priority", "MaxPrice"}  # nothing else overridden


def test_terminate_twice_says_already_gone(aws, tmp_path):
    ctx, pool, _outputs = scientist(tmp_path)
    execute_launch(ctx, plan_launch(ctx, request(pool, "brief", 2)))
    first = terminate_annex(ctx, "brief")
    second = terminate_annex(ctx, "brief")
    assert len(first.instance_ids) == 2 and first.already_gone is False and first.objects_removed == 2
    assert second.instance_ids == [] and second.objects_removed == 0 and second.already_gone is True


# --- faults injected inside the broker: its launch as a component (see the module docstring) -------
# Only the tests that make CreateFleet come back short or refused call the broker's code in this
# process: a fault cannot be injected into the function's own EC2 client in its child process.


def broker_call(clients, outputs: dict[str, str], bundle_path, params: dict) -> Call:
    """A Call as the broker builds one after proving the caller (the admin's clients stand in for
    the broker's role: this is the operation's logic under an injected fault, not its permissions)."""
    bundle = load_bundle(bundle_path)
    registry = Registry(clients.client("dynamodb"), outputs[contract.OUT_REGISTRY_TABLE])
    settings = BrokerSettings(
        function_name=outputs[contract.OUT_BROKER_FUNCTION], region="us-east-1", stack_name=contract.DEFAULT_STACK_NAME,
        bucket=outputs[contract.OUT_BUCKET], table=outputs[contract.OUT_REGISTRY_TABLE],
        launch_templates=dict(p.split("=", 1) for p in outputs[contract.OUT_LAUNCH_TEMPLATES].split(",")),
        subnets=tuple(outputs[contract.OUT_SUBNETS].split(",")),
    )
    return Call(settings, bundle.user, bundle.project_id, registry.caps(bundle.project_id), clients.ec2, clients.s3,
                registry, datetime.now(timezone.utc).replace(microsecond=0), params, ssm=clients.client("ssm"))


def launch_params(name: str, count: int, request_id: str) -> dict:
    return {
        "annex_name": name, "count": count, "idle_minutes": 15, "spot": False, "request_id": request_id,
        "expiry": (datetime.now(timezone.utc) + timedelta(hours=5)).strftime(contract.EXPIRY_FORMAT),
        "job_owner": "alice",
    }


def shortage(ec2, *, first_round_gets: int | None, every_round_empty: bool = False):
    """Make CreateFleet come back short with a capacity error for the first pool it names."""
    requests: list[dict] = []

    def edit_request(params, **_):
        requests.append(params)
        spec = params["TargetCapacitySpecification"]
        if every_round_empty or len(requests) == 1:
            spec["TotalTargetCapacity"] = spec["OnDemandTargetCapacity"] = 0 if every_round_empty else first_round_gets
        edit_request.pools = [(o["InstanceType"], o["SubnetId"]) for c in params["LaunchTemplateConfigs"] for o in c["Overrides"]]

    def add_errors(parsed, **_):
        if every_round_empty:
            parsed["Instances"] = []
            failed = edit_request.pools
        elif len(requests) == 1:
            failed = edit_request.pools[:1]
        else:
            return
        parsed.setdefault("Errors", []).extend(
            {"LaunchTemplateAndOverrides": {"Overrides": {"InstanceType": t, "SubnetId": s}},
             "ErrorCode": CAPACITY, "ErrorMessage": "We currently do not have sufficient capacity."}
            for t, s in failed
        )

    ec2.meta.events.register("provide-client-params.ec2.CreateFleet", edit_request)
    ec2.meta.events.register("after-call.ec2.CreateFleet", add_errors)
    return requests


def test_capacity_errors_fall_back_to_the_remaining_pools(aws, clients, tmp_path):
    _ctx, _pool, outputs = scientist(tmp_path)
    requests = shortage(clients.ec2, first_round_gets=10)
    call = broker_call(clients, outputs, tmp_path / "b.toml", launch_params("short", 16, "a" * 32))
    result = launch(call)
    assert result["rounds"] == 2 and len(result["instance_ids"]) == 16 and len(annex_instances("short")) == 16
    assert requests[1]["TargetCapacitySpecification"]["TotalTargetCapacity"] == 6
    first = (requests[0]["LaunchTemplateConfigs"][0]["Overrides"][0]["InstanceType"],
             requests[0]["LaunchTemplateConfigs"][0]["Overrides"][0]["SubnetId"])
    second_pools = {(o["InstanceType"], o["SubnetId"]) for c in requests[1]["LaunchTemplateConfigs"] for o in c["Overrides"]}
    assert first not in second_pools and len(second_pools) == 3 * 3 - 1
    assert [e["code"] for e in result["errors"]] == [CAPACITY]


def test_every_pool_failing_launches_nothing_and_takes_the_configuration_back(aws, clients, tmp_path):
    _ctx, _pool, outputs = scientist(tmp_path)
    shortage(clients.ec2, first_round_gets=None, every_round_empty=True)
    call = broker_call(clients, outputs, tmp_path / "b.toml", launch_params("none", 4, "b" * 32))
    result = launch(call)
    assert result["instance_ids"] == [] and result["rounds"] == 1
    assert len(result["errors"]) == 9  # every (type, subnet) pool said so
    prefix = contract.annex_prefix(PROJECT, "none")
    assert clients.s3.list_objects_v2(Bucket=outputs[contract.OUT_BUCKET], Prefix=prefix).get("KeyCount", 0) == 0
    # Nothing runs under that request id, so it is forgotten: the same id may be tried again.
    assert call.registry.begin_request(PROJECT, "b" * 32) is None


def test_a_fleet_answer_mixing_instances_and_a_refusal_reports_the_instances(aws, clients, tmp_path):
    """A partial fleet whose other part was refused (not a capacity error): the instances that run
    are reported and remembered, no further round asks the same, and a rerun of the request id
    answers with them instead of launching a second set."""
    _ctx, _pool, outputs = scientist(tmp_path)

    def refuse_part(parsed, **_):
        parsed.setdefault("Errors", []).append({"ErrorCode": "InvalidParameterValue", "ErrorMessage": "part refused"})

    clients.ec2.meta.events.register("after-call.ec2.CreateFleet", refuse_part)
    params = launch_params("mixed", 4, "c" * 32)
    result = launch(broker_call(clients, outputs, tmp_path / "b.toml", params))
    assert len(result["instance_ids"]) == 4 and result["rounds"] == 1
    assert "part refused" in result["stopped_by"]
    again = launch(broker_call(clients, outputs, tmp_path / "b.toml", params))
    assert again["instance_ids"] == result["instance_ids"] and again["replayed"] is True
    assert len(annex_instances("mixed")) == 4


def test_errors_that_name_no_pool_do_not_repeat_identical_rounds(aws, clients, tmp_path):
    _ctx, _pool, outputs = scientist(tmp_path)
    seen: list[dict] = []

    def nothing(params, **_):
        seen.append(params)
        params["TargetCapacitySpecification"]["TotalTargetCapacity"] = 0
        params["TargetCapacitySpecification"]["OnDemandTargetCapacity"] = 0

    def vague(parsed, **_):
        parsed["Instances"] = []
        parsed["Errors"] = [{"ErrorCode": CAPACITY, "ErrorMessage": "no pool named"}]

    clients.ec2.meta.events.register("provide-client-params.ec2.CreateFleet", nothing)
    clients.ec2.meta.events.register("after-call.ec2.CreateFleet", vague)
    templates = dict(p.split("=", 1) for p in outputs[contract.OUT_LAUNCH_TEMPLATES].split(","))
    spec = FleetSpec(3, templates, [(t, s) for t in templates for s in outputs[contract.OUT_SUBNETS].split(",")],
                     {contract.TAG_ANNEX_NAME: "vague"}, False, {t: 0.1 for t in templates})
    result = run_fleet(clients.ec2.create_fleet, spec, token_prefix="d" * 32)
    assert len(seen) == 1 and result.rounds == 1
    assert result.stopped_by == "the fleet's errors named no pool to avoid"


# --- each project's nodes run as its own role ----------------------------------------------------------


def test_the_broker_launches_a_project_from_its_own_template_versions(aws, clients, tmp_path):
    """Through Invoke: every launch specification of the fleet EC2 stored names the stack's template
    at the project's version (the one that adds the project's node profile), and the plan names the
    role its nodes run as."""
    ctx, pool, _outputs = scientist(tmp_path)
    node = Registry(clients.client("dynamodb"), _outputs[contract.OUT_REGISTRY_TABLE]).node(PROJECT)
    plan = plan_launch(ctx, request(pool, "versioned", 2))
    result = execute_launch(ctx, plan)
    assert len(result.instance_ids) == 2 and result.answer["node_role"] == node.role_arn
    (fleet,) = launched_fleets(clients.ec2, {t.template_id for t in node.templates.values()})
    # The fleet itself carries its stack's tag: the only fleets the broker may make, and the enforcer delete.
    assert {t["Key"]: t["Value"] for t in fleet["Tags"]} == {
        contract.TAG_STACK: contract.DEFAULT_STACK_NAME, contract.TAG_PROJECT: PROJECT, contract.TAG_ANNEX_NAME: "versioned"}
    specs = [c["LaunchTemplateSpecification"] for c in fleet["LaunchTemplateConfigs"]]
    assert len(specs) == len(node.templates)
    assert sorted((s["LaunchTemplateId"], s["Version"]) for s in specs) == sorted(
        (t.template_id, str(t.version)) for t in node.templates.values())
    for spec in specs:
        (version,) = clients.ec2.describe_launch_template_versions(
            LaunchTemplateId=spec["LaunchTemplateId"], Versions=[spec["Version"]])["LaunchTemplateVersions"]
        assert version["LaunchTemplateData"]["IamInstanceProfile"] == {"Arn": node.profile_arn}


def test_a_project_without_its_node_role_launches_nothing(aws, clients, tmp_path):
    """A project issued before node roles existed (or whose record is gone) is refused, with what
    to do, and nothing is launched or written."""
    ctx, pool, outputs = scientist(tmp_path)
    clients.client("dynamodb").delete_item(
        TableName=outputs[contract.OUT_REGISTRY_TABLE], Key={"pk": {"S": f"node#{PROJECT}"}, "sk": {"S": "node"}})
    with pytest.raises(BadInput) as caught:
        plan_launch(ctx, request(pool, "roleless", 2))
    assert "has no node role" in caught.value.what and "issue-credentials" in caught.value.next_step
    assert annex_instances("roleless") == []
    assert clients.s3.list_objects_v2(Bucket=outputs[contract.OUT_BUCKET]).get("KeyCount", 0) == 0
