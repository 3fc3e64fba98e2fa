"""The enforcer's rules as pure functions: instance descriptions in, decisions out (no I/O)."""

from __future__ import annotations

import ast
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from annex_cloud.nodes import node_role_name
from templates import contract
from annex_cloud import enforcer as enf
from annex_cloud import guardrails, leftovers, metrics
from annex_cloud.leftovers import Leftover, StackScope
from annex_cloud.caps import Caps
from annex_cloud.cost import PriceBook, commitment
from annex_cloud.expiry import format_expiry_tag, parse_expiry_tag

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)
PRICES = PriceBook({"m5.large": 0.1, "c5.large": 0.05, "m5.xlarge": 0.2})


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def described(
    instance_id: str,
    *,
    annex: str | None = "a1",
    project: str | None = "p1",
    expiry: str | None = None,
    launched: datetime = NOW - timedelta(hours=1),
    state: str = "running",
    instance_type: str = "m5.large",
    extra_tags: dict[str, str] | None = None,
) -> dict:
    """One entry of describe_instances' Reservations[].Instances[], as botocore returns it."""
    tags = dict(extra_tags or {})
    if annex is not None:
        tags[contract.TAG_ANNEX_NAME] = annex
    if project is not None:
        tags[contract.TAG_PROJECT] = project
    if expiry is not None:
        tags[contract.TAG_EXPIRY] = expiry
    description = {
        "InstanceId": instance_id,
        "InstanceType": instance_type,
        "LaunchTime": launched,
        "State": {"Code": 16, "Name": state},
    }
    if tags:
        description["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
    return description


def instance(instance_id: str, **kwargs) -> enf.AnnexInstance:
    kwargs.setdefault("expiry", stamp(NOW + timedelta(hours=10)))
    found = enf.annex_instance(described(instance_id, **kwargs))
    assert found is not None
    return found


def plan(instances, caps: dict[str, Caps | None], prices=PRICES, now=NOW) -> enf.Plan:
    return enf.plan_terminations(instances, lambda project: caps.get(project), prices, now)


def condemned(result: enf.Plan) -> list[str]:
    return [t.instance.instance_id for t in result.terminations]


# --- the deployed package stands alone ---------------------------------------------------


def test_cloud_package_imports_only_stdlib_boto3_and_itself():
    """annex_cloud is the functions' zip: nothing of the tools may be imported from it."""
    import sys

    package = Path(enf.__file__).parent
    allowed = set(sys.stdlib_module_names) | {"boto3", "botocore", "annex_cloud"}
    for module in package.rglob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]] if node.level == 0 else ["annex_cloud"]
            else:
                continue
            assert set(names) <= allowed, f"{module.name} line {node.lineno} imports {names}"


# --- expiry parsing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-18T23:59:00Z", datetime(2026, 12, 18, 23, 59, tzinfo=timezone.utc)),
        ("2026-02-28T00:00:01Z", datetime(2026, 2, 28, 0, 0, 1, tzinfo=timezone.utc)),
    ],
)
def test_parse_expiry_accepts_utc_z(text, expected):
    parsed = parse_expiry_tag(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "next tuesday",
        "2026-12-18 23:59",  # no zone: ambiguous, so not a valid lease
        "2026-12-18T23:59:00",  # no Z
        "2026-12-18T23:59:00+01:00",  # the contract says UTC with Z
        "2026-13-40T25:61:00Z",
        "1765929600",
        "2026-12-18T23:59:00ZZ",
        "\x00\n",
        # One format only: what the broker writes. Near misses are no lease at all.
        "2026-12-18T23:59:00.250Z",
        "2026-12-18T23:59Z",
        " 2026-12-18T23:59:00Z ",
        "2026-12-18t23:59:00z",
        "2026-1-8T3:59:00Z",
        "2026-02-30T00:00:00Z",
    ],
)
def test_parse_expiry_rejects_anything_else(text):
    assert parse_expiry_tag(text) is None


def test_a_z_expiry_round_trips_through_format_time():
    assert format_expiry_tag(parse_expiry_tag("2027-01-02T03:04:05Z")) == "2027-01-02T03:04:05Z"


# --- which instances are the enforcer's at all -----------------------------------------------


def test_only_live_instances_with_the_annex_name_tag_are_considered():
    expired = stamp(NOW - timedelta(hours=1))
    assert enf.annex_instance(described("i-foreign", annex=None, expiry=expired)) is None
    assert enf.annex_instance(described("i-bare", annex=None, project=None)) is None
    assert enf.annex_instance({"InstanceId": "i-untagged", "State": {"Name": "running"}}) is None
    for state in ("shutting-down", "terminated"):
        assert enf.annex_instance(described("i-gone", expiry=expired, state=state)) is None
    for state in ("pending", "running", "stopping", "stopped"):
        found = enf.annex_instance(described("i-live", expiry=expired, state=state))
        assert found is not None and found.state == state


def test_annex_instance_reads_tags_and_times():
    launched = datetime(2026, 12, 1, 6, 0, tzinfo=timezone.utc)
    found = enf.annex_instance(
        described("i-1", annex="run7", project="lab", expiry="2026-12-02T00:00:00Z", launched=launched)
    )
    assert (found.annex_name, found.project_id, found.instance_type) == ("run7", "lab", "m5.large")
    assert found.launch_time == launched
    assert found.expiry == datetime(2026, 12, 2, tzinfo=timezone.utc)
    missing_project = enf.annex_instance(described("i-2", project=None, expiry="x"))
    assert missing_project.project_id == "" and missing_project.expiry is None


STACK_TEMPLATE = "lt-0123456789abcdef0"


def from_template(instance_id: str, template: str = STACK_TEMPLATE, **kwargs) -> dict:
    """An instance launched from a launch template: EC2 adds the template's id as an aws: tag."""
    extra = dict(kwargs.pop("extra_tags", None) or {})
    extra[enf.TAG_LAUNCH_TEMPLATE_ID] = template
    return described(instance_id, extra_tags=extra, **kwargs)


def test_instances_from_the_stack_templates_are_annex_instances_whatever_their_tags():
    later = stamp(NOW + timedelta(hours=10))
    bare = enf.annex_instance(from_template("i-bare", annex=None, project=None), [STACK_TEMPLATE])
    assert bare is not None and bare.tag_problem and "without an annex name tag" in bare.tag_problem
    # Another template's instance, or the stack's templates unknown: not the enforcer's.
    assert enf.annex_instance(from_template("i-other", template="lt-ffffffffffffffff0", annex=None), [STACK_TEMPLATE]) is None
    assert enf.annex_instance(from_template("i-unknown", annex=None)) is None
    # Fully tagged, from the template: an ordinary annex instance.
    tagged = enf.annex_instance(from_template("i-tagged", expiry=later), [STACK_TEMPLATE])
    assert tagged is not None and tagged.tag_problem is None
    assert condemned(plan([bare, tagged], {})) == ["i-bare"]


@pytest.mark.parametrize(
    "tags",
    [
        {"HTCondor:annexname": "a1"},
        {contract.TAG_ANNEX_NAME: "a1", "HTCondor:Annex:Expiry": "2099-01-01T00:00:00Z"},
        {contract.TAG_ANNEX_NAME: "a1", "htcondor:annex:PROJECT": "p2"},
    ],
    ids=["name-key-case", "expiry-key-case", "project-key-case"],
)
def test_a_contract_tag_key_in_another_case_is_no_valid_lease(tags):
    later = stamp(NOW + timedelta(hours=10))
    description = from_template("i-odd", annex=None, expiry=later, extra_tags=tags)
    found = enf.annex_instance(description, [STACK_TEMPLATE])
    assert found is not None
    (termination,) = plan([found], {}).terminations
    assert "differs in case" in termination.reason


def test_tag_key_problem_names_the_key_and_ignores_unrelated_keys():
    assert enf.tag_key_problem({contract.TAG_ANNEX_NAME: "a", "Name": "x", "aws:ec2launchtemplate:id": "lt-1"}) is None
    problem = enf.tag_key_problem({"HTCONDOR:ANNEXNAME": "a"})
    assert problem == "tag key 'HTCONDOR:ANNEXNAME' differs in case from 'htcondor:AnnexName'"


# --- lease rules ------------------------------------------------------------------------------


def test_lease_rules_condemn_expired_missing_and_garbage_expiry():
    fleet = [
        instance("i-expired", expiry=stamp(NOW - timedelta(seconds=1))),
        instance("i-at-expiry", expiry=stamp(NOW)),
        instance("i-valid", expiry=stamp(NOW + timedelta(minutes=1))),
        instance("i-missing", expiry=None),
        instance("i-garbage", expiry="soon\nterminate i-valid"),
    ]
    fleet[3] = enf.annex_instance(described("i-missing"))  # no expiry tag at all
    result = plan(fleet, {})
    reasons = {t.instance.instance_id: t.reason for t in result.terminations}
    assert set(reasons) == {"i-expired", "i-at-expiry", "i-missing", "i-garbage"}
    assert reasons["i-missing"] == "no expiry tag"
    assert "unparsable" in reasons["i-garbage"] and "\n" not in reasons["i-garbage"]
    assert reasons["i-expired"].startswith("lease expired at ")


def test_lease_longer_than_the_cap_is_condemned_and_slack_is_forgiven():
    launched = NOW - timedelta(hours=2)
    cap = Caps(max_lease_hours=24)
    fleet = [
        instance("i-long", launched=launched, expiry=stamp(launched + timedelta(hours=25))),
        instance("i-exact", launched=launched, expiry=stamp(launched + timedelta(hours=24))),
        instance("i-skewed", launched=launched, expiry=stamp(launched + timedelta(hours=24, minutes=4))),
        instance("i-other-project", project="p2", launched=launched, expiry=stamp(launched + timedelta(hours=99))),
    ]
    result = plan(fleet, {"p1": cap})
    assert condemned(result) == ["i-long"]
    assert "25.00 h exceeds the project's cap of 24 h" in result.terminations[0].reason


def test_without_caps_only_lease_rules_apply():
    fleet = [instance(f"i-{n:02d}", launched=NOW - timedelta(minutes=n)) for n in range(50)]
    fleet.append(instance("i-expired", expiry=stamp(NOW - timedelta(hours=1))))
    assert condemned(plan(fleet, {"p1": None})) == ["i-expired"]


# --- newest first, ties, instance cap ---------------------------------------------------------


def test_instance_cap_condemns_the_newest_and_ignores_lease_breakers():
    base = NOW - timedelta(hours=5)
    fleet = [
        instance("i-oldest", launched=base),
        instance("i-expired", launched=base + timedelta(minutes=30), expiry=stamp(NOW - timedelta(minutes=1))),
        instance("i-second", launched=base + timedelta(hours=1)),
        instance("i-third", launched=base + timedelta(hours=2)),
        instance("i-newest", launched=base + timedelta(hours=3)),
    ]
    result = plan(fleet, {"p1": Caps(max_instances=2)})
    # Lease breakers first; they do not count, so two of the four valid ones survive.
    assert condemned(result) == ["i-expired", "i-newest", "i-third"]
    assert all("cap is 2" in t.reason for t in result.terminations[1:])


def test_ties_in_launch_time_are_broken_by_instance_id_deterministically():
    same = NOW - timedelta(hours=1)
    ids = ["i-0c", "i-0a", "i-0d", "i-0b"]
    for order in (ids, list(reversed(ids)), sorted(ids)):
        fleet = [instance(i, launched=same) for i in order]
        result = plan(fleet, {"p1": Caps(max_instances=2)})
        assert condemned(result) == ["i-0d", "i-0c"]
    assert [i.instance_id for i in enf.newest_first(instance(i, launched=same) for i in ids)] == [
        "i-0d",
        "i-0c",
        "i-0b",
        "i-0a",
    ]


def test_launch_time_outranks_instance_id():
    fleet = [
        instance("i-zzz", launched=NOW - timedelta(hours=3)),
        instance("i-aaa", launched=NOW - timedelta(hours=1)),
    ]
    assert condemned(plan(fleet, {"p1": Caps(max_instances=1)})) == ["i-aaa"]


def test_zero_instance_cap_condemns_every_instance_of_the_project():
    fleet = [instance(f"i-{n}", launched=NOW - timedelta(minutes=n)) for n in range(3)]
    assert sorted(condemned(plan(fleet, {"p1": Caps(max_instances=0)}))) == ["i-0", "i-1", "i-2"]


# --- committed spend --------------------------------------------------------------------------


def test_committed_cost_is_price_times_remaining_hours():
    one = instance("i-1", instance_type="m5.large", expiry=stamp(NOW + timedelta(hours=10)))
    assert commitment(one, PRICES, NOW) == pytest.approx(0.1 * 10)
    half = instance("i-2", instance_type="c5.large", expiry=stamp(NOW + timedelta(minutes=90)))
    assert commitment(half, PRICES, NOW) == pytest.approx(0.05 * 1.5)


def test_spend_cap_condemns_newest_until_under_and_never_counts_an_unknown_type_as_free():
    base = NOW - timedelta(hours=4)
    ten_hours = stamp(NOW + timedelta(hours=10))
    fleet = [
        instance("i-r1", launched=base, expiry=ten_hours),  # 1.0
        instance("i-r2", launched=base + timedelta(hours=1), expiry=ten_hours, instance_type="x9.huge"),  # 2.0
        instance("i-r3", launched=base + timedelta(hours=2), expiry=ten_hours),  # 1.0
        instance("i-r4", launched=base + timedelta(hours=3), expiry=ten_hours),  # 1.0
    ]
    result = plan(fleet, {"p1": Caps(max_spend_usd=2.5)})
    # x9.huge has no price: it could cost anything, so under a spend cap it goes first. The
    # priced rest commit 3.0 > 2.5: drop the newest (r4), leaving 2.0.
    assert condemned(result) == ["i-r2", "i-r4"]
    assert "no price is known for instance type 'x9.huge'" in result.terminations[0].reason
    assert "$3.00 exceeds its cap of $2.50" in result.terminations[1].reason
    # Every project has a spend cap: however high, a type without a price never survives it.
    assert condemned(plan(fleet, {"p1": Caps(max_instances=10, max_spend_usd=1e6)})) == ["i-r2"]


def test_no_prices_at_all_is_not_zero_spend():
    """Outside the shipped regions, with no stored prices, five week-long instances under a $1 cap
    used to live on (counted at $0). Now nothing unpriced survives a spend cap."""
    week = stamp(NOW + timedelta(days=7))
    fleet = [instance(f"i-{n}", launched=NOW - timedelta(minutes=n), expiry=week) for n in range(5)]
    result = enf.plan_terminations(fleet, lambda project: Caps(max_spend_usd=1.0), PriceBook({}), NOW)
    assert sorted(t.instance.instance_id for t in result.terminations) == [f"i-{n}" for n in range(5)]


def test_spend_exactly_at_the_cap_is_allowed():
    one_hour = stamp(NOW + timedelta(hours=1))
    fleet = [
        instance(f"i-{n}", launched=NOW - timedelta(hours=n), expiry=one_hour, instance_type="c5.large")
        for n in range(1, 4)
    ]
    total = sum(commitment(i, PRICES, NOW) for i in fleet)
    assert total > 0.15  # 3 x 0.05 x 1 h in floats: 0.15000000000000002
    assert condemned(plan(fleet, {"p1": Caps(max_spend_usd=0.15)})) == []
    assert condemned(plan(fleet, {"p1": Caps(max_spend_usd=0.14)})) == ["i-1"]


def test_instance_cap_applies_before_spend_cap():
    ten = stamp(NOW + timedelta(hours=10))
    fleet = [instance(f"i-{n}", launched=NOW - timedelta(hours=10 - n), expiry=ten) for n in range(5)]
    result = plan(fleet, {"p1": Caps(max_instances=3, max_spend_usd=2.0)})
    # Cap of 3 drops i-4, i-3; the three left commit 3.0 > 2.0, so i-2 goes too.
    assert condemned(result) == ["i-4", "i-3", "i-2"]
    assert "cap is 3" in result.terminations[0].reason and "spend" in result.terminations[2].reason


def test_projects_are_capped_independently():
    fleet = [instance(f"i-a{n}", project="a", launched=NOW - timedelta(hours=n)) for n in range(3)]
    fleet += [instance(f"i-b{n}", project="b", launched=NOW - timedelta(hours=n)) for n in range(3)]
    fleet += [instance(f"i-c{n}", project="c", launched=NOW - timedelta(hours=n)) for n in range(3)]
    result = plan(fleet, {"a": Caps(max_instances=1), "b": None})
    assert condemned(result) == ["i-a0", "i-a1"]


# --- caps from the administrator's record -----------------------------------------------------


def test_a_project_without_a_record_may_run_nothing_and_unreadable_caps_leave_lease_rules():
    errors: list[str] = []
    lines: list[str] = []
    records = {"known": Caps(4, 48.0, 100.0)}

    def read(project: str):
        if project == "corrupt":
            raise ValueError("the instance cap is not a whole number")
        return records.get(project)

    cache = enf.CapsCache(read, lines.append, errors)
    assert cache("known") == Caps(4, 48.0, 100.0)
    assert cache("stranger") == Caps(max_instances=0)
    assert cache("corrupt") is None
    assert len(errors) == 1 and "corrupt" in errors[0]


# --- orphan configuration ---------------------------------------------------------------------


def test_orphan_keys_deletes_only_old_configuration_of_annexes_without_instances():
    old, fresh = NOW - timedelta(hours=2), NOW - timedelta(seconds=30)
    objects = [
        ("annexes/p1/live/condor_config", old),
        ("annexes/p1/gone/condor_config", old),
        ("annexes/p1/gone/security/token", old),
        ("annexes/p1/launching/condor_config", fresh),
        ("annexes/p1/half/condor_config", old),
        ("annexes/p1/half/annex.env", fresh),  # a launch is uploading: leave the annex whole
        ("annexes/p2/live/condor_config", old),  # same annex name, other project: an orphan
        ("annexes/README", old),
        ("annexes/p1/", old),
        ("annexes//x/y", old),
        ("projects/p1/caps.json", old),
    ]
    doomed = enf.orphan_keys(objects, {("p1", "live")}, NOW, 900)
    assert doomed == [
        "annexes/p1/gone/condor_config",
        "annexes/p1/gone/security/token",
        "annexes/p2/live/condor_config",
    ]


def test_orphan_grace_boundary():
    modified = NOW - timedelta(seconds=900)
    assert enf.orphan_keys([("annexes/p/a/x", modified)], set(), NOW, 900) == ["annexes/p/a/x"]
    assert enf.orphan_keys([("annexes/p/a/x", modified)], set(), NOW, 901) == []


# --- reports and configuration ----------------------------------------------------------------


def test_report_dict_is_json_and_names_every_field():
    report = enf.SweepReport(
        terminated=[("i-1", "a1", "p1", "no expiry tag")], kept=3, deleted_objects=["annexes/p1/a0/x"], errors=["e"],
        could_not_end=[("i-2", "a2", "p1", "UnauthorizedOperation: no")],
        leftovers=[Leftover("volume", "vol-1", "annex volume left available")],
    )
    document = json.loads(json.dumps(report.to_dict()))
    assert document == {
        "dry_run": False,
        "terminated": [{"instance_id": "i-1", "annex_name": "a1", "project_id": "p1", "reason": "no expiry tag"}],
        "kept": 3,
        "could_not_end": [
            {"instance_id": "i-2", "annex_name": "a2", "project_id": "p1", "error": "UnauthorizedOperation: no"}
        ],
        "leftovers": [{"kind": "volume", "id": "vol-1", "reason": "annex volume left available"}],
        "deleted_objects": ["annexes/p1/a0/x"],
        "errors": ["e"],
    }
    assert report.metric_counts() == {metrics.ENDED: 1, metrics.COULD_NOT_END: 1, metrics.ERRORS: 1}


def test_handler_refuses_to_run_without_a_bucket():
    with pytest.raises(ValueError, match="ANNEX_BUCKET"):
        enf.handler({}, None, environ={"ANNEX_REGISTRY_TABLE": "t"})
    with pytest.raises(ValueError, match="ANNEX_REGISTRY_TABLE"):
        enf.handler({}, None, environ={"ANNEX_BUCKET": "b"})


def test_printable_keeps_log_lines_single():
    assert "\n" not in enf.printable("a\nb") and len(enf.printable("x" * 500)) <= 80
    assert enf.one_line("k\r\ny") == "k\\r\\ny"


# --- the state-change event and the function's environment ------------------------------------

# As EC2 documents it (monitoring-instance-state-changes): what EventBridge hands the function.
STATE_CHANGE = {
    "version": "0",
    "id": "7bf73129-1428-4cd3-a780-95db273d1602",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "123456789012",
    "time": "2021-11-11T21:29:54Z",
    "region": "us-east-1",
    "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-1234567890abcdef0"],
    "detail": {"instance-id": "i-1234567890abcdef0", "state": "pending"},
}


def test_state_change_event_names_its_instance_and_other_events_none():
    assert enf.state_change_instance(STATE_CHANGE) == "i-1234567890abcdef0"
    scheduled = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
    for event in (scheduled, {}, {"dry_run": True}, None, "text", {**STATE_CHANGE, "source": "my.app"}):
        assert enf.state_change_instance(event) is None


@pytest.mark.parametrize("detail", [{}, {"instance-id": "i-1; rm -rf /"}, {"instance-id": 7}, "i-1234567890abcdef0"])
def test_a_state_change_event_without_a_usable_instance_id_is_refused(detail):
    with pytest.raises(ValueError, match="instance id"):
        enf.state_change_instance({**STATE_CHANGE, "detail": detail})


def test_stack_scope_comes_from_the_function_environment():
    scope = enf.stack_scope_from_env(
        {"ANNEX_STACK_NAME": "HTCondorAnnex", "ANNEX_LAUNCH_TEMPLATES": "lt-1,lt-2,",
         "ANNEX_LAUNCH_TEMPLATE_NAMES": "HTCondorAnnex-m5-large"}
    )
    assert scope == StackScope("HTCondorAnnex", ("lt-1", "lt-2"), ("HTCondorAnnex-m5-large",))
    assert scope.launch_templates == {"lt-1", "lt-2", "HTCondorAnnex-m5-large"}
    assert enf.stack_scope_from_env({"ANNEX_LAUNCH_TEMPLATES": "lt-1"}) is None
    # Lambda names its region: with it, the scope knows each project's node profile.
    regional = enf.stack_scope_from_env({"ANNEX_STACK_NAME": "HTCondorAnnex", "AWS_REGION": "ap-southeast-2"})
    assert regional.node_profile("p1") == node_role_name("HTCondorAnnex", "ap-southeast-2", "p1")


def with_profile(description: dict, profile_name: str) -> dict:
    arn = f"arn:aws:iam::123456789012:instance-profile/condor-annex/nodes/S/us-east-1/{profile_name}"
    return {**description, "IamInstanceProfile": {"Arn": arn, "Id": "AIPA0123456789"}}


def test_an_annex_instance_running_with_another_projects_node_profile_has_no_lease():
    """Its role could read the other project's pool material: it ends like an instance with no lease."""
    scope = StackScope("S", region="us-east-1")
    later = stamp(NOW + timedelta(hours=10))
    own = enf.annex_instance(with_profile(described("i-own", expiry=later), scope.node_profile("p1")), (), scope.node_profile)
    other = enf.annex_instance(with_profile(described("i-other", expiry=later), scope.node_profile("p2")), (),
                               scope.node_profile)
    foreign = enf.annex_instance(with_profile(described("i-admin", expiry=later), "AdministratorAccess"), (),
                                 scope.node_profile)
    none = enf.annex_instance(described("i-none", expiry=later), (), scope.node_profile)
    assert own.tag_problem is None and none.tag_problem is None
    assert "not the node profile of project 'p1'" in other.tag_problem
    assert "'AdministratorAccess'" in foreign.tag_problem
    plan = enf.plan_terminations([own, other, foreign, none], lambda _p: None, PriceBook({}), NOW)
    assert sorted(t.instance.instance_id for t in plan.terminations) == ["i-admin", "i-other"]
    # Without the stack's region the rule cannot name the profile, and does not guess.
    assert enf.annex_instance(with_profile(described("i-x", expiry=later), "anything"), ()).tag_problem is None


def test_metric_data_names_the_stack_and_refuses_unknown_metrics():
    data = metrics.metric_data("S", {metrics.HEARTBEAT: 1, metrics.COULD_NOT_END: 2}, NOW)
    assert [d["MetricName"] for d in data] == ["Heartbeat", "CouldNotEnd"]
    assert all(d["Dimensions"] == [{"Name": "StackName", "Value": "S"}] and d["Timestamp"] == NOW for d in data)
    assert [d["Value"] for d in data] == [1.0, 2.0]
    with pytest.raises(ValueError):
        metrics.metric_data("S", {"Spent": 1}, NOW)


# --- leftovers ----------------------------------------------------------------------------------

SCOPE = StackScope("HTCondorAnnex", (STACK_TEMPLATE,), ("HTCondorAnnex-m5-large",))
OLD = NOW - timedelta(hours=1)
GRACE = 600


def fleet(fleet_id: str, *, kind: str = "maintain", state: str = "active", created=OLD, by: str = "LaunchTemplateId",
          template: str = STACK_TEMPLATE, tags: dict[str, str] | None = None) -> dict:
    return {
        "FleetId": fleet_id, "Type": kind, "FleetState": state, "CreateTime": created,
        "LaunchTemplateConfigs": [{"LaunchTemplateSpecification": {by: template, "Version": "$Default"}}],
        "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()],
    }


def test_lasting_fleets_from_the_stack_templates_are_leftovers_after_the_grace():
    fleets = [
        fleet("fleet-maintain"),
        fleet("fleet-request", kind="request", by="LaunchTemplateName", template="HTCondorAnnex-m5-large"),
        fleet("fleet-instant", kind="instant"),  # deleting it would terminate its instances
        fleet("fleet-deleted", state="deleted_running"),
        fleet("fleet-foreign", template="lt-ffffffffffffffff0"),
        fleet("fleet-fresh", created=NOW - timedelta(seconds=GRACE - 1)),
        fleet("fleet-at-grace", created=NOW - timedelta(seconds=GRACE)),
        fleet("fleet-ageless", created=None),
    ]
    found = leftovers.leftover_fleets(fleets, SCOPE, NOW, GRACE)
    assert [f.resource_id for f in found] == ["fleet-maintain", "fleet-request", "fleet-at-grace", "fleet-ageless"]
    assert all(f.kind == "fleet" for f in found)
    assert leftovers.leftover_fleets(fleets, None, NOW, GRACE) == []


def test_a_lasting_fleet_tagged_with_the_stack_is_a_leftover_whatever_its_templates():
    fleets = [
        fleet("fleet-tagged", template="lt-ffffffffffffffff0", tags={contract.TAG_STACK: SCOPE.name}),
        fleet("fleet-other-stack", template="lt-ffffffffffffffff0", tags={contract.TAG_STACK: "OtherStack"}),
        fleet("fleet-tagged-instant", kind="instant", tags={contract.TAG_STACK: SCOPE.name}),
    ]
    found = leftovers.leftover_fleets(fleets, SCOPE, NOW, GRACE)
    assert [(f.resource_id, f.reason) for f in found] == [("fleet-tagged", f"maintain fleet tagged with stack {SCOPE.name}")]


def spot(request_id: str, *, kind: str = "persistent", state: str = "active", tags=None, created=OLD) -> dict:
    tags = {contract.TAG_STACK: "HTCondorAnnex"} if tags is None else tags
    return {"SpotInstanceRequestId": request_id, "Type": kind, "State": state, "CreateTime": created,
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}


def test_persistent_and_open_spot_requests_of_the_stack_are_leftovers():
    requests = [
        spot("sir-persistent"),
        spot("sir-open", kind="one-time", state="open"),
        spot("sir-active-once", kind="one-time"),  # launches nothing more
        spot("sir-cancelled", state="cancelled"),
        spot("sir-annex-tagged", tags={contract.TAG_ANNEX_NAME: "a1"}),
        spot("sir-other-stack", tags={contract.TAG_STACK: "Other"}),
        spot("sir-untagged", tags={}),
        {**spot("sir-of-an-annex-instance", tags={}), "InstanceId": "i-0123456789abcdef0"},
        {**spot("sir-of-another-instance", tags={}), "InstanceId": "i-0fffffffffffffff0"},
        spot("sir-fresh", created=NOW - timedelta(seconds=5)),
    ]
    found = leftovers.leftover_spot_requests(requests, SCOPE, NOW, GRACE, {"i-0123456789abcdef0"})
    assert [r.resource_id for r in found] == [
        "sir-persistent", "sir-open", "sir-annex-tagged", "sir-of-an-annex-instance"
    ]
    assert "relaunches" in found[0].reason and "may launch" in found[1].reason


def test_available_volumes_of_the_stack_are_leftovers():
    def volume(volume_id, state="available", tags=None, created=OLD):
        tags = {contract.TAG_STACK: "HTCondorAnnex"} if tags is None else tags
        return {"VolumeId": volume_id, "State": state, "CreateTime": created, "Size": 30,
                "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}

    volumes = [
        volume("vol-left"),
        volume("vol-annex", tags={contract.TAG_ANNEX_NAME: "a1"}),
        volume("vol-in-use", state="in-use"),
        volume("vol-foreign", tags={"Name": "db"}),
        volume("vol-other-stack", tags={contract.TAG_STACK: "Other"}),
        volume("vol-fresh", created=NOW - timedelta(minutes=1)),
    ]
    found = leftovers.leftover_volumes(volumes, SCOPE, NOW, GRACE)
    assert [v.resource_id for v in found] == ["vol-left", "vol-annex"]
    assert found[0].reason == "annex volume of 30 GiB left available"
    assert [v.resource_id for v in leftovers.leftover_volumes(volumes, None, NOW, GRACE)] == ["vol-annex"]


# --- the guardrails' bounds ------------------------------------------------------------------------


def test_deadman_bound_is_a_few_hours_at_most():
    assert guardrails.DEADMAN_MAX_SECONDS <= 4 * 3600
    assert guardrails.deadman_problem(guardrails.DEADMAN_DEFAULT_SECONDS) is None
    assert guardrails.deadman_problem(guardrails.DEADMAN_MAX_SECONDS) is None
    for bad in (guardrails.DEADMAN_MAX_SECONDS + 1, guardrails.DEADMAN_MIN_SECONDS - 1, 1800.0, True, "1800", None):
        assert guardrails.deadman_problem(bad) is not None, bad


def test_packages_depend_downwards_only():
    """Programs above templates above annex_common above annex_cloud: no import cycle."""
    order = ["annex_cloud", "annex_common", "templates", "annex_admin", "annex_user"]
    root = Path(enf.__file__).resolve().parents[1]
    for rank, package in enumerate(order):
        below = set(order[:rank])
        for module in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(module.read_text())):
                names = []
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module.split(".")[0]]
                elif isinstance(node, ast.Import):
                    names = [alias.name.split(".")[0] for alias in node.names]
                ours = {n for n in names if n in order and n != package}
                # The two programs are peers: neither imports the other.
                assert ours <= below, f"{module.relative_to(root)} imports {sorted(ours - below)}"
