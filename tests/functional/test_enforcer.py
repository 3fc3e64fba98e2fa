"""The enforcer against the local emulator: real describe, terminate, S3 list, get and delete calls.

Facts about the emulator these tests build on (moto 5.2, measured):
- ``LaunchTime`` is the moment of the ``run_instances`` call at one-second resolution, and every
  instance of one call shares it. To know which instance is "newest", the fleets below launch the
  instances a cap rule ranks in separate calls at least a second apart (the enforcer itself breaks
  ties by instance id, which the unit tests cover).
- ``describe_instances`` returns at most 100 reservations per page, one reservation per call, so
  the scale case launches more than 100 reservations.
- S3 ``LastModified`` cannot be set, so orphan ages are controlled by passing ``now`` later.
- Describing instances costs time proportional to instances x tags in the emulator, so the scale
  case keeps its tags few.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import botocore.exceptions
import pytest

from annex_admin.enforce import stack_scope
from annex_admin.stack import read_stack
from annex_cloud.cost import PriceBook
from annex_common.errors import AwsFailure
from templates import contract
from annex_cloud import enforcer as enf
from annex_cloud import instances, metrics, termination
from annex_cloud.caps import Caps as ProjectCaps
from annex_cloud.leftovers import StackScope
from tests import emulator as emu
from tests.flows import deploy_stack

BUCKET = "annex-config-enforcer-test"
IMAGE = "ami-12c6146b"
PRICES = PriceBook({"m5.large": 0.1, "c5.large": 0.05, "m5.xlarge": 0.2})
LIVE = ("pending", "running", "stopping", "stopped")


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def stamp(moment: datetime) -> str:
    return moment.strftime(contract.EXPIRY_FORMAT)


def launch(
    ec2,
    count: int = 1,
    *,
    annex: str | None = None,
    project: str | None = None,
    expiry: str | None = None,
    instance_type: str = "m5.large",
    other_tags: dict[str, str] | None = None,
    **more: object,
) -> list[str]:
    tags = dict(other_tags or {})
    wanted = {contract.TAG_ANNEX_NAME: annex, contract.TAG_PROJECT: project, contract.TAG_EXPIRY: expiry}
    tags.update({key: value for key, value in wanted.items() if value is not None})
    request = {"ImageId": IMAGE, "MinCount": count, "MaxCount": count, "InstanceType": instance_type, **more}
    if tags:
        request["TagSpecifications"] = [
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ]
    return [i["InstanceId"] for i in ec2.run_instances(**request)["Instances"]]


def states(ec2) -> dict[str, str]:
    found = {}
    for page in ec2.get_paginator("describe_instances").paginate():
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                found[instance["InstanceId"]] = instance["State"]["Name"]
    return found


def live_ids(ec2) -> set[str]:
    found = set()
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "instance-state-name", "Values": list(LIVE)}]
    )
    for page in pages:
        found |= {i["InstanceId"] for r in page["Reservations"] for i in r["Instances"]}
    return found


def launch_times(ec2, ids: list[str]) -> list[datetime]:
    by_id = {
        i["InstanceId"]: i["LaunchTime"]
        for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]
        for i in r["Instances"]
    }
    return [by_id[i] for i in ids]


# The administrator's record, as the sweep reads it (the registry table is exercised through the
# deployed function in tests/e2e/test_admin.py): a project with no entry has no record.
RECORDS: dict[str, ProjectCaps] = {}


def put_caps(_s3, project: str, **caps) -> None:
    full = {"max_instances": 10_000, "max_lease_hours": 24 * 366, "max_spend_usd": 1e9, **caps}
    RECORDS[project] = ProjectCaps(int(full["max_instances"]), float(full["max_lease_hours"]), float(full["max_spend_usd"]))


@pytest.fixture(autouse=True)
def _fresh_records():
    RECORDS.clear()


def terminated_ids(report: enf.SweepReport) -> set[str]:
    return {entry[0] for entry in report.terminated}


def do_sweep(clients, now: datetime, *, dry_run: bool = False, grace: int = 900, log=None, caps=None, **extra):
    lines: list[str] = []
    report = enf.sweep(
        clients.ec2,
        clients.s3,
        bucket=BUCKET,
        prices=PRICES,
        caps=caps or RECORDS.get,
        now=now,
        dry_run=dry_run,
        log=log or lines.append,
        config_grace_seconds=grace,
        **extra,
    )
    return report, lines


@pytest.fixture
def bucket(clients):
    clients.s3.create_bucket(Bucket=BUCKET)
    return BUCKET


def build_fleet_table(clients) -> tuple[datetime, set[str], set[str], set[str]]:
    """Every kind of instance the enforcer meets; returns (now, doomed, kept annex, foreign)."""
    ec2, s3 = clients.ec2, clients.s3
    base = utcnow()
    past, later = stamp(base - timedelta(hours=1)), stamp(base + timedelta(hours=10))
    doomed: set[str] = set()
    kept: set[str] = set()

    # Generous caps: the lease rules decide.
    put_caps(s3, "lease-only")
    doomed |= set(launch(ec2, 2, annex="old-run", project="lease-only", expiry=past))
    kept |= set(launch(ec2, 2, annex="fresh-run", project="lease-only", expiry=later))
    doomed |= set(launch(ec2, annex="untagged-run", project="lease-only"))
    doomed |= set(launch(ec2, annex="garbage-run", project="lease-only", expiry="next tuesday"))
    stopped = launch(ec2, annex="stopped-run", project="lease-only", expiry=past)
    ec2.stop_instances(InstanceIds=stopped)
    doomed |= set(stopped)
    kept |= set(launch(ec2, annex="stray", expiry=later))  # no project tag: lease rules only
    doomed |= set(launch(ec2, annex="stray", expiry=past))

    # A lease cap of 24 h: a 72 h lease breaks it, a 6 h one does not.
    put_caps(s3, "capped-lease", max_instances=50, max_lease_hours=24, max_spend_usd=1000)
    doomed |= set(launch(ec2, annex="too-long", project="capped-lease", expiry=stamp(base + timedelta(hours=72))))
    kept |= set(launch(ec2, annex="short", project="capped-lease", expiry=stamp(base + timedelta(hours=6))))

    # Another project with generous caps and one expired instance.
    put_caps(s3, "other-lab", max_instances=10, max_lease_hours=100, max_spend_usd=1000)
    kept |= set(launch(ec2, 3, annex="steady", project="other-lab", expiry=later))
    doomed |= set(launch(ec2, annex="steady", project="other-lab", expiry=past))

    # Foreign instances: never the enforcer's, whatever else they carry.
    foreign = set(launch(ec2, 2))
    foreign |= set(launch(ec2, 2, project="lease-only", expiry=past, other_tags={"Name": "web"}))
    foreign |= set(launch(ec2, other_tags={"Name": "db", "htcondor:AnnexNameX": "x"}))

    # Cap projects ranked by launch time: one instance per project per second.
    put_caps(s3, "crowded", max_instances=2)
    put_caps(s3, "spendy", max_spend_usd=3.5)
    crowded, spendy = [], []
    for round_ in range(4):
        if round_:
            time.sleep(1.05)
        crowded += launch(ec2, annex=f"crowd-{round_}", project="crowded", expiry=past if round_ == 1 else later)
        # 1.0, unknown type (no price: could cost anything), 1.0, 1.0 USD committed.
        kind = "x9.huge" if round_ == 1 else "m5.large"
        spendy += launch(ec2, annex="big", project="spendy", expiry=later, instance_type=kind)
    for ids in (crowded, spendy):
        times = launch_times(ec2, ids)
        assert times == sorted(times) and len(set(times)) == 4, "rounds must differ in LaunchTime"
    # crowded: round 1 expired (removed first, not counted); of rounds 0, 2, 3 the newest goes.
    doomed |= {crowded[1], crowded[3]}
    kept |= {crowded[0], crowded[2]}
    # spendy: the unpriced one goes under a spend cap; the priced rest commit 3.0 <= 3.5.
    doomed |= {spendy[1]}
    kept |= {spendy[0], spendy[2], spendy[3]}
    # A project the administrator never recorded may run nothing at all.
    doomed |= set(launch(ec2, 2, annex="unrecorded", project="nobody-recorded", expiry=later))
    return base + timedelta(seconds=10), doomed, kept, foreign


def test_one_sweep_terminates_exactly_the_right_instances_and_a_second_does_nothing(clients, bucket):
    now, doomed, kept, foreign = build_fleet_table(clients)
    assert live_ids(clients.ec2) == doomed | kept | foreign

    dry, dry_lines = do_sweep(clients, now, dry_run=True)
    assert terminated_ids(dry) == doomed
    assert live_ids(clients.ec2) == doomed | kept | foreign, "a dry run terminated something"

    report, lines = do_sweep(clients, now)
    assert terminated_ids(report) == doomed
    assert sorted(report.terminated) == sorted(dry.terminated), "dry run and sweep disagree"
    assert report.kept == len(kept) and report.errors == []
    assert live_ids(clients.ec2) == kept | foreign
    final = states(clients.ec2)
    assert {final[i] for i in doomed} <= {"shutting-down", "terminated"}

    reasons = {entry[0]: entry[3] for entry in report.terminated}
    assert sum("no expiry tag" == r for r in reasons.values()) == 1
    assert sum("unparsable expiry tag" in r for r in reasons.values()) == 1
    assert sum("exceeds the project's cap of 24 h" in r for r in reasons.values()) == 1
    assert sum("cap is 2" in r for r in reasons.values()) == 1
    assert sum("no price is known for instance type 'x9.huge'" in r for r in reasons.values()) == 1
    assert sum("cap is 0" in r for r in reasons.values()) == 2  # the unrecorded project

    # One line per action, one line per capless project, one summary line last.
    assert sum(line.startswith("terminated i-") for line in lines) == len(doomed)
    assert sum(line.startswith("would terminate i-") for line in dry_lines) == len(doomed)
    assert sum("'nobody-recorded' has no record" in line for line in lines) == 1
    assert sum("x9.huge" in line for line in lines) == 1
    assert lines[-1].startswith("enforcer at ") and f"{len(doomed)} instances terminated" in lines[-1]
    assert dry_lines[-1].startswith("enforcer (dry run) at ")

    again, again_lines = do_sweep(clients, now)
    assert again.terminated == [] and again.deleted_objects == [] and again.errors == []
    assert again.kept == len(kept)
    assert live_ids(clients.ec2) == kept | foreign
    assert not any(line.startswith("terminated") for line in again_lines)


def test_orphan_configuration_is_deleted_once_old_and_live_annexes_keep_theirs(clients, bucket):
    ec2, s3 = clients.ec2, clients.s3
    base = utcnow()
    put_caps(s3, "lab")
    launch(ec2, annex="live", project="lab", expiry=stamp(base + timedelta(hours=10)))
    launch(ec2, annex="ending", project="lab", expiry=stamp(base - timedelta(minutes=5)))
    keys = {
        "live": ["annexes/lab/live/condor_config", "annexes/lab/live/annex.env"],
        "ending": ["annexes/lab/ending/condor_config", "annexes/lab/ending/security/token"],
        "gone": ["annexes/lab/gone/condor_config", "annexes/lab/gone/security/pool_password"],
        "other-project": ["annexes/other/live/condor_config"],
        "untouchable": ["annexes/README", "projects/elsewhere/caps.json", "elsewhere/annexes/lab/gone/x"],
    }
    for group in keys.values():
        for key in group:
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    orphans = keys["ending"] + keys["gone"] + keys["other-project"]

    # Moments after upload: everything is within the grace period, even the orphans.
    fresh, _ = do_sweep(clients, base + timedelta(seconds=60))
    assert fresh.deleted_objects == []
    assert len(fresh.terminated) == 1  # "ending" expired; its configuration waits for the grace

    later = base + timedelta(hours=1)
    dry, dry_lines = do_sweep(clients, later, dry_run=True)
    assert sorted(dry.deleted_objects) == sorted(orphans)
    assert sum(line.startswith("would delete orphan configuration") for line in dry_lines) == len(orphans)

    def stored() -> set[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        return {o["Key"] for page in pages for o in page.get("Contents", [])}

    everything = {k for group in keys.values() for k in group}
    assert stored() == everything, "a dry run deleted something"

    report, lines = do_sweep(clients, later)
    assert sorted(report.deleted_objects) == sorted(orphans)
    assert stored() == everything - set(orphans)
    assert sum(line.startswith("deleted orphan configuration") for line in lines) == len(orphans)

    again, _ = do_sweep(clients, later)
    assert again.deleted_objects == [] and again.terminated == [] and again.errors == []


def test_an_annex_terminated_in_this_sweep_loses_its_old_configuration_in_the_same_sweep(clients, bucket):
    base = utcnow()
    launch(clients.ec2, 3, annex="done", project="lab", expiry=stamp(base + timedelta(hours=2)))
    clients.s3.put_object(Bucket=BUCKET, Key="annexes/lab/done/condor_config", Body=b"x")
    report, _ = do_sweep(clients, base + timedelta(hours=3))
    assert len(report.terminated) == 3
    assert report.deleted_objects == ["annexes/lab/done/condor_config"]
    assert do_sweep(clients, base + timedelta(hours=3))[0].to_dict()["deleted_objects"] == []


def refuse_calls_naming(ec2, operation: str, instance_id: str):
    """Make the emulator itself refuse every ``operation`` call that names ``instance_id``: the
    request also names an instance that does not exist. Returns the calls made (their ids)."""
    calls: list[list[str]] = []

    def poison(params, **_):
        ids = list(params.get("InstanceIds") or [params.get("InstanceId")])
        calls.append(ids)
        if instance_id in ids:
            if "InstanceIds" in params:
                params["InstanceIds"] = ids + ["i-00000000000000000"]
            else:
                params["InstanceId"] = "i-00000000000000000"

    event = f"provide-client-params.ec2.{operation}"
    ec2.meta.events.register(event, poison)
    return calls, lambda: ec2.meta.events.unregister(event, poison)


def test_one_instance_that_cannot_be_ended_keeps_no_other_alive(clients, bucket, monkeypatch):
    """Batches of 3 (the real limit, 500, needs more instances than this test should launch). Every
    TerminateInstances call naming one of the instances is refused by the emulator (the call also
    names an instance that does not exist): its batch is retried instance by instance, the others
    end in this sweep, and it is reported as not ended until the refusals stop."""
    monkeypatch.setattr(termination, "TERMINATE_BATCH", 3)
    base = utcnow()
    # One call: one launch time, so the sweep orders them by id and batches them in that order.
    doomed = sorted(launch(clients.ec2, 7, annex="run", project="lab", expiry=stamp(base - timedelta(hours=1))))
    bad = doomed[4]  # in the second batch
    calls, stop = refuse_calls_naming(clients.ec2, "TerminateInstances", bad)
    try:
        report, lines = do_sweep(clients, base)
    finally:
        stop()

    batches = [c for c in calls if len(c) > 1]
    assert [len(c) for c in batches] == [3, 3]  # the last batch holds one instance: tried on its own
    assert batches == [doomed[0:3], doomed[3:6]]
    # Each instance of the refused batch on its own, then the last batch of one.
    assert [c for c in calls if len(c) == 1] == [[i] for i in doomed[3:6]] + [[doomed[6]]]
    assert terminated_ids(report) == set(doomed) - {bad}
    assert live_ids(clients.ec2) == {bad}
    assert [entry[0] for entry in report.could_not_end] == [bad]
    assert len(report.errors) == 1 and bad in report.errors[0] and "InvalidInstanceID.NotFound" in report.errors[0]
    assert report.kept == 1
    assert sum("ending each on its own" in line for line in lines) == 1
    assert "1 could not be ended" in lines[-1]

    retry, _ = do_sweep(clients, base)
    assert terminated_ids(retry) == {bad} and retry.errors == [] and retry.could_not_end == []
    assert live_ids(clients.ec2) == set()


def protect(ec2, instance_id: str) -> None:
    # The emulator ignores DisableApiTermination given to run_instances but honours this call.
    ec2.modify_instance_attribute(InstanceId=instance_id, DisableApiTermination={"Value": True})


def test_termination_protection_shields_no_annex_instance_and_its_zone_mates_end_too(clients, bucket):
    """Three expired annex instances in one zone, one protected, and a protected foreign instance.
    The emulator refuses the whole TerminateInstances call for the protected one (AWS refuses it
    for every instance in that zone): one sweep still ends all three, and only them."""
    ec2 = clients.ec2
    base = utcnow()
    zone = {"Placement": {"AvailabilityZone": f"{emu.REGION}a"}}
    expired = stamp(base - timedelta(minutes=10))
    ids = [i["InstanceId"] for i in ec2.run_instances(
        ImageId=IMAGE, MinCount=3, MaxCount=3, InstanceType="m5.large", **zone,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": contract.TAG_ANNEX_NAME, "Value": "late"}, {"Key": contract.TAG_PROJECT, "Value": "lab"},
            {"Key": contract.TAG_EXPIRY, "Value": expired}]}],
    )["Instances"]]
    (foreign,) = launch(ec2, other_tags={"Name": "payroll-db"})
    for instance_id in (ids[1], foreign):
        protect(ec2, instance_id)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        ec2.terminate_instances(InstanceIds=[ids[1]])
    assert refused.value.response["Error"]["Code"] == "OperationNotPermitted"

    report, lines = do_sweep(clients, base)
    assert terminated_ids(report) == set(ids)
    assert report.could_not_end == [] and report.errors == []
    assert live_ids(ec2) == {foreign}
    assert f"cleared the termination protection of {ids[1]}" in lines
    attribute = ec2.describe_instance_attribute(InstanceId=foreign, Attribute="disableApiTermination")
    assert attribute["DisableApiTermination"]["Value"] is True, "a foreign instance was touched"


def test_a_protected_instance_whose_protection_cannot_be_cleared_is_reported(clients, bucket):
    """The emulator refuses the ModifyInstanceAttribute call (it names an instance that does not
    exist), as AWS would refuse a role without the permission."""
    base = utcnow()
    (kept_alive,) = launch(clients.ec2, annex="late", project="lab", expiry=stamp(base - timedelta(minutes=1)))
    protect(clients.ec2, kept_alive)
    _, stop = refuse_calls_naming(clients.ec2, "ModifyInstanceAttribute", kept_alive)
    try:
        report, lines = do_sweep(clients, base)
    finally:
        stop()
    assert report.terminated == [] and [c[0] for c in report.could_not_end] == [kept_alive]
    assert report.to_dict()["could_not_end"][0]["error"].startswith("InvalidInstanceID.NotFound")
    assert live_ids(clients.ec2) == {kept_alive}


def test_instances_from_the_stack_templates_without_a_valid_lease_are_ended(clients, bucket):
    """The emulator, like EC2, tags an instance launched from a launch template with the template's
    id (aws:ec2launchtemplate:id); that is how the sweep finds instances whose tags are missing or
    spelt in another case."""
    ec2 = clients.ec2
    base = utcnow()
    later = stamp(base + timedelta(hours=5))

    def template(name: str) -> str:
        data = {"ImageId": IMAGE, "InstanceType": "m5.large"}
        return ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData=data)["LaunchTemplate"][
            "LaunchTemplateId"]

    ours, theirs = template("stack-m5-large"), template("someone-elses")
    put_caps(clients.s3, "lab")

    def from_template(lt: str, tags: dict[str, str]) -> str:
        request = {"MinCount": 1, "MaxCount": 1, "LaunchTemplate": {"LaunchTemplateId": lt}}
        if tags:
            request["TagSpecifications"] = [
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        return ec2.run_instances(**request)["Instances"][0]["InstanceId"]

    lease = {contract.TAG_ANNEX_NAME: "run", contract.TAG_PROJECT: "lab", contract.TAG_EXPIRY: later}
    doomed = {
        from_template(ours, {}): "without an annex name tag",
        from_template(ours, {"HTCondor:annexname": "run", contract.TAG_EXPIRY: later}): "differs in case",
        from_template(ours, {**lease, "HTCondor:Annex:Expiry": later}): "differs in case",
        from_template(ours, {contract.TAG_ANNEX_NAME: "run", "htcondor:annex:EXPIRY": later}): "differs in case",
    }
    kept = {from_template(ours, lease)}
    foreign = {from_template(theirs, {}), from_template(theirs, {"HTCondor:annexname": "x"})}
    stack = StackScope("stack", (ours,), ("stack-m5-large",))

    report, _ = do_sweep(clients, base, stack=stack)
    reasons = {entry[0]: entry[3] for entry in report.terminated}
    assert set(reasons) == set(doomed)
    for instance_id, reason in doomed.items():
        assert reason in reasons[instance_id]
    assert live_ids(ec2) == kept | foreign
    # Without the stack's templates, only the annex name tag marks an annex instance.
    assert do_sweep(clients, base)[0].terminated == []


def test_unreadable_caps_are_reported_and_only_lease_rules_apply(clients, bucket):
    base = utcnow()
    def read(project: str):
        if project == "broken":
            raise ValueError("the caps record is incomplete or malformed ('max_instances')")
        if project == "negative":
            raise ValueError("the instance cap must be a whole number of at least 1, not -3")
        return RECORDS.get(project)

    kept = set(launch(clients.ec2, 3, annex="a", project="broken", expiry=stamp(base + timedelta(hours=500))))
    kept |= set(launch(clients.ec2, 2, annex="b", project="negative", expiry=stamp(base + timedelta(hours=1))))
    doomed = set(launch(clients.ec2, annex="c", project="broken", expiry=stamp(base - timedelta(hours=1))))
    report, lines = do_sweep(clients, base, caps=read)
    assert terminated_ids(report) == doomed
    assert len(report.errors) == 2
    assert any("'broken'" in e and "invalid" in e for e in report.errors)
    assert any("'negative'" in e and "instance cap" in e for e in report.errors)
    assert live_ids(clients.ec2) == kept


@pytest.mark.slow
def test_scale_over_a_thousand_instances_across_pages_and_batches(clients, bucket, monkeypatch):
    """1,170 instances; the 990 annex ones in 105 reservations, so more than one describe page even
    after the server-side filter (the emulator filters before it pages, and pages by reservation:
    pages of 1,000 would hold them all, so they are made 50 here); 600 to terminate, so two
    TerminateInstances batches. The emulator's describe cost grows with instances x tags, which is
    why this is not larger and why the instances to terminate carry a single tag."""
    monkeypatch.setattr(instances, "PAGE_SIZE", 50)
    ec2 = clients.ec2
    base = utcnow()
    later = stamp(base + timedelta(hours=10))
    doomed, kept, foreign = set(), set(), set()
    started = time.monotonic()
    for n in range(60):  # annex instances with no lease tag
        doomed |= set(launch(ec2, 10, annex=f"bulk-{n % 5}"))
    for n in range(45):
        kept |= set(launch(ec2, 6, annex=f"keep-{n % 4}", expiry=later))
    for n in range(10):
        foreign |= set(launch(ec2, 30))
    launched = time.monotonic() - started
    assert (len(doomed), len(kept), len(foreign)) == (600, 270, 300)

    batches: list[int] = []
    pages: list[int] = []

    def count_batch(params, **_):
        batches.append(len(params["InstanceIds"]))

    def count_page(params, **_):
        pages.append(1)

    ec2.meta.events.register("provide-client-params.ec2.TerminateInstances", count_batch)
    ec2.meta.events.register("provide-client-params.ec2.DescribeInstances", count_page)
    started = time.monotonic()
    report, lines = do_sweep(clients, base)
    swept = time.monotonic() - started
    ec2.meta.events.unregister("provide-client-params.ec2.TerminateInstances", count_batch)
    ec2.meta.events.unregister("provide-client-params.ec2.DescribeInstances", count_page)
    assert len(pages) >= 2

    assert terminated_ids(report) == doomed and len(report.terminated) == len(doomed)
    assert report.kept == len(kept) and report.errors == []
    assert batches == [500, 100]
    assert sum(line.startswith("terminated ") for line in lines) == len(doomed)
    assert live_ids(ec2) == kept | foreign
    print(f"scale: launched 1,170 instances in {launched:.1f} s, swept in {swept:.1f} s")


def test_the_deployed_enforcer_sweeps_with_the_registry_caps_and_prices(clients, tmp_path):
    """annex-admin enforce invokes the stack's own function: its code, role, caps and prices."""
    from annex_admin.enforce import report_lines, run_enforcer
    from annex_cloud.registry import Registry
    from tests.flows import PROJECT, deploy_stack, issue_bundle

    outputs = deploy_stack(clients).outputs
    issue_bundle(clients, tmp_path / "b.toml", caps=ProjectCaps(2, 48, 500.0))
    registry = Registry(clients.client("dynamodb"), outputs[contract.OUT_REGISTRY_TABLE])
    assert registry.prices().price("m5.large") == pytest.approx(0.096)  # the shipped table for us-east-1
    base = utcnow()
    doomed = set(launch(clients.ec2, annex="old", project=PROJECT, expiry=stamp(base - timedelta(minutes=1))))
    kept = set(launch(clients.ec2, 2, annex="new", project=PROJECT, expiry=stamp(base + timedelta(hours=1))))
    time.sleep(1.05)
    doomed |= set(launch(clients.ec2, annex="third", project=PROJECT, expiry=stamp(base + timedelta(hours=1))))
    function = outputs[contract.OUT_ENFORCER_FUNCTION]

    dry = run_enforcer(clients, function, dry_run=True)
    assert dry["dry_run"] is True and {t["instance_id"] for t in dry["terminated"]} == doomed
    assert live_ids(clients.ec2) == doomed | kept
    assert any("cap is 2" in line for line in report_lines(dry))

    real = run_enforcer(clients, function, dry_run=False)
    assert {t["instance_id"] for t in real["terminated"]} == doomed
    assert live_ids(clients.ec2) == kept


def test_run_enforcer_turns_refusals_into_an_aws_failure(aws, clients, tmp_path):
    from annex_admin.enforce import run_enforcer
    from tests.flows import deploy_stack

    function = deploy_stack(clients).outputs[contract.OUT_ENFORCER_FUNCTION]
    aws.enforce_iam(True)  # the suite's fake keys are unknown to IAM, so every call is refused
    with pytest.raises(AwsFailure) as caught:
        run_enforcer(clients, function, dry_run=True)
    assert caught.value.what == "the enforcer sweep failed"
    assert "does not accept these credentials" in caught.value.why


def test_the_deployed_zip_imports_standalone(tmp_path):
    """The functions' zip, unpacked with no project package and no site-packages (-S): the
    enforcer and the rules it shares import; boto3 is imported only when a handler runs."""
    import io
    import subprocess
    import sys
    import zipfile

    from annex_admin.artifact import build_function_zip

    zipfile.ZipFile(io.BytesIO(build_function_zip().body)).extractall(tmp_path)
    probe = (
        "import annex_cloud.enforcer as e; assert callable(e.handler) and callable(e.sweep); "
        "print(e.TAG_ANNEX_NAME, e.__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    tag, origin = result.stdout.split()
    assert tag == contract.TAG_ANNEX_NAME
    assert origin.startswith(str(tmp_path))


# --- leftovers of the region stack ----------------------------------------------------------------


def annex_tags(annex: str, expiry: str) -> list[dict[str, str]]:
    tags = {contract.TAG_ANNEX_NAME: annex, contract.TAG_PROJECT: "lab", contract.TAG_EXPIRY: expiry,
            contract.TAG_IDLE: "900", contract.TAG_OWNER: "needs-moore"}
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def fleet_request(lt: str, subnet: str, kind: str, tags: list[dict[str, str]] | None = None) -> dict:
    request = {
        "Type": kind,
        "LaunchTemplateConfigs": [{
            "LaunchTemplateSpecification": {"LaunchTemplateId": lt, "Version": "$Default"},
            "Overrides": [{"SubnetId": subnet}],
        }],
        "TargetCapacitySpecification": {
            "TotalTargetCapacity": 1, "DefaultTargetCapacityType": "on-demand", "OnDemandTargetCapacity": 1,
        },
    }
    if tags:
        request["TagSpecifications"] = [{"ResourceType": "instance", "Tags": tags}]
    return request


def fleet_states(ec2) -> dict[str, str]:
    return {f["FleetId"]: f["FleetState"] for f in ec2.describe_fleets()["Fleets"]}


def test_leftovers_of_the_stack_are_listed_by_a_dry_run_and_removed_by_a_sweep(clients):
    """The real region stack: its launch templates tag the volumes they create (the emulator applies
    a template's volume tags to fleet launches). The persistent spot request is made with
    RequestSpotInstances and tagged as the broker tags an annex's: the emulator cannot make one
    from a launch template."""
    ec2 = clients.ec2
    stack = read_stack(clients, deploy_stack(clients).outputs and contract.DEFAULT_STACK_NAME)
    scope = stack_scope(stack)
    lt, subnet = stack.launch_templates["m5.large"], stack.subnets[0]
    base = utcnow()
    later = stamp(base + timedelta(hours=5))

    # An annex as the broker launches it: an instant fleet, tags on the instance.
    annex = ec2.create_fleet(**fleet_request(lt, subnet, "instant", annex_tags("run", later)))
    (instance_id,) = annex["Instances"][0]["InstanceIds"]
    (volume,) = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}])["Volumes"]
    assert {"Key": contract.TAG_STACK, "Value": stack.name} in volume["Tags"]
    # Its volume outlives it.
    device = volume["Attachments"][0]["Device"]
    ec2.modify_instance_attribute(InstanceId=instance_id,
                                  BlockDeviceMappings=[{"DeviceName": device, "Ebs": {"DeleteOnTermination": False}}])
    ec2.terminate_instances(InstanceIds=[instance_id])
    # A lasting fleet from the stack's template, and a persistent spot request of an annex.
    maintain = ec2.create_fleet(**fleet_request(lt, subnet, "maintain"))["FleetId"]
    spot = ec2.request_spot_instances(
        InstanceCount=1, Type="persistent",
        LaunchSpecification={"ImageId": IMAGE, "InstanceType": "m5.large", "SubnetId": subnet},
        TagSpecifications=[{"ResourceType": "spot-instances-request", "Tags": annex_tags("spotty", later)}],
    )["SpotInstanceRequests"][0]["SpotInstanceRequestId"]
    # Not leftovers: a live annex's instant fleet, someone else's fleet and volume.
    other_lt = ec2.create_launch_template(
        LaunchTemplateName="someone-elses", LaunchTemplateData={"ImageId": IMAGE, "InstanceType": "m5.large"}
    )["LaunchTemplate"]["LaunchTemplateId"]
    live_fleet = ec2.create_fleet(**fleet_request(lt, subnet, "instant", annex_tags("live", later)))["FleetId"]
    foreign_fleet = ec2.create_fleet(**fleet_request(other_lt, subnet, "maintain"))["FleetId"]
    foreign_volume = ec2.create_volume(AvailabilityZone=stack.availability_zones[0], Size=8)["VolumeId"]

    def sweep_at(moment: datetime, dry_run: bool = False) -> tuple[enf.SweepReport, list[str]]:
        lines: list[str] = []
        report = enf.sweep(clients.ec2, clients.s3, bucket=stack.bucket, prices=PRICES, caps=RECORDS.get,
                           dry_run=dry_run, now=moment, log=lines.append, stack=scope)
        return report, lines

    # Moments after, the volume is within its grace (the emulator gives fleets and spot requests
    # no recent creation time: their grace is covered by the unit tests).
    expected = {("fleet", maintain), ("spot request", spot), ("volume", volume["VolumeId"])}
    early, _ = sweep_at(base, dry_run=True)
    assert {(item.kind, item.resource_id) for item in early.leftovers} == expected - {("volume", volume["VolumeId"])}

    dry, dry_lines = sweep_at(base + timedelta(hours=1), dry_run=True)
    assert {(item.kind, item.resource_id) for item in dry.leftovers} == expected
    assert sum(line.startswith("would remove ") for line in dry_lines) == len(expected)
    assert fleet_states(ec2)[maintain] == "active" and ec2.describe_volumes(VolumeIds=[volume["VolumeId"]])

    report, lines = sweep_at(base + timedelta(hours=1))
    assert {(item.kind, item.resource_id) for item in report.leftovers} == expected
    assert sum(line.startswith("removed ") for line in lines) == len(expected)
    assert report.errors == []
    states = fleet_states(ec2)
    assert states[maintain].startswith("deleted")
    assert states[live_fleet] == "active" and states[foreign_fleet] == "active"
    remaining = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    assert volume["VolumeId"] not in remaining and foreign_volume in remaining
    # The emulator forgets a cancelled request; AWS shows it as "cancelled" for a while.
    requests = {r["SpotInstanceRequestId"]: r["State"] for r in ec2.describe_spot_instance_requests()["SpotInstanceRequests"]}
    assert requests.get(spot, "cancelled") == "cancelled"
    again, _ = sweep_at(base + timedelta(hours=1))
    assert again.leftovers == [] and again.errors == []


# --- faster than the schedule: the state-change event ------------------------------------------

STATE_CHANGE = {
    "version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602",
    "detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2",
    "account": "123456789012", "time": "2021-11-11T21:29:54Z", "region": emu.REGION,
}


def state_change(instance_id: str, state: str = "pending") -> dict:
    """The event EventBridge hands the function for this instance (shape from EC2's documentation:
    monitoring-instance-state-changes); the emulator never fires rules, so the test sends it."""
    return {**STATE_CHANGE, "resources": [f"arn:aws:ec2:{emu.REGION}:123456789012:instance/{instance_id}"],
            "detail": {"instance-id": instance_id, "state": state}}


def metric_sums(clients, stack_name: str, name: str) -> list[float]:
    now = datetime.now(timezone.utc)
    response = clients.client("cloudwatch").get_metric_statistics(
        Namespace=metrics.NAMESPACE, MetricName=name, Dimensions=metrics.dimensions(stack_name),
        StartTime=now - timedelta(hours=2), EndTime=now + timedelta(minutes=5), Period=60, Statistics=["Sum"],
    )
    return [point["Sum"] for point in sorted(response["Datapoints"], key=lambda p: p["Timestamp"])]


def test_a_starting_instance_outside_the_rules_is_ended_by_its_state_change_event(clients, tmp_path):
    """The deployed enforcer, invoked with the event its state-change rule would deliver."""
    import json

    from tests.flows import PROJECT, issue_bundle

    ec2 = clients.ec2
    base = utcnow()
    outputs = deploy_stack(clients).outputs
    issue_bundle(clients, tmp_path / "b.toml", caps=ProjectCaps(32, 24, 500.0))
    lt = dict(p.split("=", 1) for p in outputs[contract.OUT_LAUNCH_TEMPLATES].split(","))["m5.large"]
    untagged = ec2.run_instances(MinCount=1, MaxCount=1, LaunchTemplate={"LaunchTemplateId": lt})["Instances"][0][
        "InstanceId"]
    (unleased,) = launch(ec2, annex="run", project=PROJECT, expiry=stamp(base + timedelta(days=400)))
    (leased,) = launch(ec2, annex="run", project=PROJECT, expiry=stamp(base + timedelta(hours=2)))
    (foreign,) = launch(ec2, other_tags={"Name": "web"})
    function = outputs[contract.OUT_ENFORCER_FUNCTION]

    def invoke(event: dict) -> dict:
        answer = clients.awslambda.invoke(FunctionName=function, Payload=json.dumps(event).encode())
        return {"error": answer.get("FunctionError"), **json.loads(answer["Payload"].read())}

    for instance_id, state in ((untagged, "pending"), (unleased, "running")):
        result = invoke(state_change(instance_id, state))
        assert [t["instance_id"] for t in result["terminated"]] == [instance_id], result
    for instance_id in (leased, foreign, "i-0123456789abcdef0"):  # the last one is unknown to EC2
        result = invoke(state_change(instance_id))
        assert result["terminated"] == [] and result["errors"] == [], result
    assert live_ids(ec2) == {leased, foreign}
    assert invoke(state_change(unleased, "running"))["terminated"] == []  # already gone: nothing to do
    # Each check counts what it ended; only a sweep beats the heartbeat.
    assert sum(metric_sums(clients, contract.DEFAULT_STACK_NAME, metrics.ENDED)) == 2
    assert metric_sums(clients, contract.DEFAULT_STACK_NAME, metrics.HEARTBEAT) == []
    broken = invoke({**STATE_CHANGE, "detail": {"state": "pending"}})
    assert broken["error"] == "Unhandled"


def test_every_sweep_publishes_its_heartbeat_and_counts(clients, bucket):
    base = utcnow()
    launch(clients.ec2, 2, annex="old", project="lab", expiry=stamp(base - timedelta(minutes=1)))
    (stuck,) = launch(clients.ec2, annex="stuck", project="lab", expiry=stamp(base - timedelta(minutes=1)))
    protect(clients.ec2, stuck)
    cloudwatch = clients.client("cloudwatch")
    scope = StackScope("metrics-stack")
    _, stop = refuse_calls_naming(clients.ec2, "ModifyInstanceAttribute", stuck)
    try:
        report, _ = do_sweep(clients, base, stack=scope, cloudwatch=cloudwatch)
    finally:
        stop()
    assert len(report.terminated) == 2 and len(report.could_not_end) == 1
    do_sweep(clients, base, dry_run=True, stack=scope, cloudwatch=cloudwatch)  # a dry run publishes nothing
    assert metric_sums(clients, scope.name, metrics.HEARTBEAT) == [1.0]
    assert metric_sums(clients, scope.name, metrics.ENDED) == [2.0]
    assert metric_sums(clients, scope.name, metrics.COULD_NOT_END) == [1.0]
    assert metric_sums(clients, scope.name, metrics.ERRORS) == [1.0]


def test_a_sweep_that_cannot_run_publishes_an_error_and_no_heartbeat(aws, clients, bucket):
    cloudwatch = clients.client("cloudwatch")
    scope = StackScope("broken-stack")
    calls: list[int] = []

    def refuse_listing(params, **_):  # the emulator refuses to describe an instance it does not know
        calls.append(1)
        params["InstanceIds"] = ["i-00000000000000000"]

    clients.ec2.meta.events.register("provide-client-params.ec2.DescribeInstances", refuse_listing)
    try:
        with pytest.raises(botocore.exceptions.ClientError):
            do_sweep(clients, utcnow(), stack=scope, cloudwatch=cloudwatch)
    finally:
        clients.ec2.meta.events.unregister("provide-client-params.ec2.DescribeInstances", refuse_listing)
    assert calls
    assert metric_sums(clients, scope.name, metrics.ERRORS) == [1.0]
    assert metric_sums(clients, scope.name, metrics.HEARTBEAT) == []


def test_an_annex_instance_with_another_projects_node_role_is_ended_by_the_deployed_enforcer(clients, tmp_path):
    """Its role could read the other project's pool material. The instances are started here with
    an explicit profile (the emulator ignores the one a launch template names)."""
    import json

    from annex_cloud.registry import Registry
    from tests.flows import PROJECT, issue_bundle

    outputs = deploy_stack(clients).outputs
    issue_bundle(clients, tmp_path / "a.toml", caps=ProjectCaps(32, 24, 500.0))
    issue_bundle(clients, tmp_path / "b.toml", project_id="OtherLab", user="labmate")
    registry = Registry(clients.client("dynamodb"), outputs[contract.OUT_REGISTRY_TABLE])
    expiry = stamp(utcnow() + timedelta(hours=2))
    started = {}
    for owner in (PROJECT, "OtherLab"):
        (started[owner],) = launch(clients.ec2, annex="run", project=PROJECT, expiry=expiry,
                                   IamInstanceProfile={"Arn": registry.node(owner).profile_arn})
    described = clients.ec2.describe_instances(InstanceIds=[started["OtherLab"]])["Reservations"][0]["Instances"][0]
    assert described["IamInstanceProfile"]["Arn"] == registry.node("OtherLab").profile_arn
    function = outputs[contract.OUT_ENFORCER_FUNCTION]
    answer = clients.awslambda.invoke(FunctionName=function, Payload=json.dumps({}).encode())
    report = json.loads(answer["Payload"].read())
    assert [t["instance_id"] for t in report["terminated"]] == [started["OtherLab"]], report
    assert "not the node profile of project" in report["terminated"][0]["reason"]
    assert started[PROJECT] in live_ids(clients.ec2)
