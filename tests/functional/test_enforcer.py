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

import pytest

from annex_common.errors import AwsFailure
from templates import contract
from annex_cloud import enforcer as enf
from annex_cloud.caps import Caps as ProjectCaps
from tests import emulator as emu

BUCKET = "annex-config-enforcer-test"
IMAGE = "ami-12c6146b"
PRICES = {"m5.large": 0.1, "c5.large": 0.05, "m5.xlarge": 0.2}
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
) -> list[str]:
    tags = dict(other_tags or {})
    wanted = {contract.TAG_ANNEX_NAME: annex, contract.TAG_PROJECT: project, contract.TAG_EXPIRY: expiry}
    tags.update({key: value for key, value in wanted.items() if value is not None})
    request = {"ImageId": IMAGE, "MinCount": count, "MaxCount": count, "InstanceType": instance_type}
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


def do_sweep(clients, now: datetime, *, dry_run: bool = False, grace: int = 900, log=None, caps=None):
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


def test_a_failed_batch_is_reported_and_the_other_batches_proceed(clients, bucket, monkeypatch):
    """Batches of 3 (the real limit, 500, needs more instances than this test should launch); the
    second TerminateInstances call is made to name an instance that does not exist, so the emulator
    itself refuses that batch."""
    monkeypatch.setattr(enf, "TERMINATE_BATCH", 3)
    base = utcnow()
    doomed = set()
    for n in range(7):
        doomed |= set(launch(clients.ec2, annex=f"run{n}", project="lab", expiry=stamp(base - timedelta(hours=1))))
    calls: list[list[str]] = []

    def poison_second_call(params, **_):
        calls.append(list(params["InstanceIds"]))
        if len(calls) == 2:
            params["InstanceIds"] = params["InstanceIds"] + ["i-00000000000000000"]

    clients.ec2.meta.events.register("provide-client-params.ec2.TerminateInstances", poison_second_call)
    report, lines = do_sweep(clients, base)
    clients.ec2.meta.events.unregister("provide-client-params.ec2.TerminateInstances", poison_second_call)

    assert [len(c) for c in calls] == [3, 3, 1]
    assert len(report.errors) == 1 and "InvalidInstanceID.NotFound" in report.errors[0]
    assert terminated_ids(report) == set(calls[0]) | set(calls[2])
    assert live_ids(clients.ec2) == set(calls[1])
    assert report.kept == 3
    assert sum(line.startswith("error: could not terminate 3 instances") for line in lines) == 1

    retry, _ = do_sweep(clients, base)
    assert terminated_ids(retry) == set(calls[1]) and retry.errors == []
    assert live_ids(clients.ec2) == set()


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
def test_scale_over_a_thousand_instances_across_pages_and_batches(clients, bucket):
    """1,170 instances; the 990 annex ones in 105 reservations, so more than one describe page even
    after the server-side filter (the emulator filters before it pages); 600 to terminate, so two
    TerminateInstances batches. The emulator's describe cost grows with instances x tags, which is
    why this is not larger and why the instances to terminate carry a single tag."""
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
