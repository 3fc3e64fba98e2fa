"""Launches and sweeps while AWS misbehaves: throttling, 5xx answers, broken connections, Ctrl-C.

Faults are injected between the tools and the emulator at botocore's ``before-send`` event
(tests/fault_support/faults.py), on the session the tools' clients are made from, so the tools run
unchanged with their own retry configuration. Nothing is patched.

An injected fault happens before the request leaves, so the emulator never executes a failed
attempt: these tests prove that retries, as configured, carry every call through and that no
partial step leaves an instance without its tags. What happens when AWS executes a request and
the answer is lost is a different case; ``test_a_lost_create_fleet_answer…`` shows it for the one
call where it matters.
"""

from __future__ import annotations

import urllib.parse
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import botocore.config
import pytest

from annex_cloud.prices import shipped_prices as regional_prices
from annex_admin.enforce import run_enforcer
from annex_common.aws import AwsClients, aws_errors, make_clients
from annex_common.errors import AwsFailure, BadInput
from annex_common.stack import read_stack
from annex_common.bundle import Bundle, Caps, load_bundle
from annex_user.context import AnnexContext
from annex_user.expiry import from_tag, to_tag
from annex_user.launch import LaunchRequest, LaunchResult, execute_launch, plan_launch
from annex_user.manage import annex_status
from templates import contract
from tests.fault_support.faults import (
    ALL_FAULTS,
    CONNECTION_CLOSED,
    FaultInjector,
    InterruptAt,
    Interrupted,
    LoseResponse,
    Recorder,
)
from tests.flows import PROJECT, USER, deploy_stack, issue_bundle, write_pool

RATE = 0.2
SEED = 20261218
# The sweep makes only a handful of requests; this seed's first draw faults its first one (the
# instance listing), so the sweep is sure to meet a fault and then runs at the set rate.
SWEEP_SEED = 20261233
LAUNCHES = 20
PER_ANNEX = 50
LEASE = timedelta(hours=72)
ALL_STATES = ["pending", "running", "shutting-down", "terminated", "stopping", "stopped"]
LIVE_STATES = {"pending", "running"}

Handler = Callable[..., Any]


# --- building blocks --------------------------------------------------------------------------


class Scientist:
    """A deployed region, her bundle and her pool: set up without faults."""

    def __init__(self, admin: AwsClients, folder: Path, caps: Caps) -> None:
        deploy_stack(admin)
        issue_bundle(admin, folder / "bundle.toml", caps=caps)
        self.bundle: Bundle = load_bundle(folder / "bundle.toml")
        self.condor_config = str(write_pool(folder / "pool").condor_config)
        self.now = datetime.now(timezone.utc).replace(microsecond=0)

    def clients(self, *handlers: Handler) -> AwsClients:
        """Her clients, with the handlers registered before any client exists."""
        clients = make_clients(
            region=self.bundle.region,
            access_key_id=self.bundle.aws_access_key_id,
            secret_access_key=self.bundle.aws_secret_access_key,
        )
        for handler in handlers:
            clients.session.events.register("before-send", handler)
        return clients

    def launch(self, annex_name: str, count: int, *handlers: Handler) -> LaunchResult:
        """What `condor_annex --annex-name NAME --instances N --yes` does: open, plan, execute."""
        clients = self.clients(*handlers)
        ctx = AnnexContext(self.bundle, clients, read_stack(clients, self.bundle.stack_name), self.now)
        plan = plan_launch(
            ctx,
            LaunchRequest(PROJECT, self.now + LEASE, count, annex_name=annex_name, condor_config=self.condor_config),
        )
        return execute_launch(ctx, plan, lambda _line: None)


def every_instance(admin: AwsClients) -> list[dict[str, Any]]:
    """Every instance in the account, whatever its state or tags, from an un-faulted client."""
    pages = admin.ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "instance-state-name", "Values": ALL_STATES}], PaginationConfig={"PageSize": 1000}
    )
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def live(admin: AwsClients) -> list[dict[str, Any]]:
    return [i for i in every_instance(admin) if i["State"]["Name"] in LIVE_STATES]


def untagged(instances: list[dict[str, Any]]) -> list[str]:
    """Instances missing any of the five tags, or carrying an empty one."""
    return [
        i["InstanceId"] for i in instances
        if any(not tags_of(i).get(key) for key in contract.REQUIRED_INSTANCE_TAGS)
    ]


def ids_of_annex(admin: AwsClients, annex_name: str) -> set[str]:
    return {i["InstanceId"] for i in live(admin) if tags_of(i).get(contract.TAG_ANNEX_NAME) == annex_name}


# --- the harness itself -----------------------------------------------------------------------


def test_a_handler_on_the_session_reaches_clients_made_after_it(clients):
    recorder = Recorder()
    clients.session.events.register("before-send", recorder)
    assert clients._cache == {}  # no client existed when the handler was registered
    clients.ec2.describe_availability_zones()
    clients.s3.list_buckets()
    clients.cloudformation.list_stacks()
    assert recorder.attempts == ["ec2.DescribeAvailabilityZones", "s3.ListBuckets", "cloudformation.ListStacks"]


@pytest.mark.parametrize("fault", ALL_FAULTS)
@pytest.mark.parametrize("operation", ["ec2", "s3", "cloudformation"])
def test_each_fault_is_retried_by_the_tools_retry_configuration(clients, fault, operation):
    injector = FaultInjector(rate=1.0, seed=1, faults=(fault,), limit=2)
    clients.session.events.register("before-send", injector)
    call = {
        "ec2": lambda: clients.ec2.describe_availability_zones(),
        "s3": lambda: clients.s3.list_buckets(),
        "cloudformation": lambda: clients.cloudformation.list_stacks(),
    }[operation]
    call()
    assert len(injector.injected) == 2
    assert len(injector.attempts) == 3  # two faults, then the real answer


@pytest.mark.parametrize("fault", ALL_FAULTS)
def test_a_fault_that_outlasts_the_retries_is_one_readable_failure(aws, fault):
    """Two retries instead of the tools' eight keep this fast; the mapping to errors is the same.

    (botocore's ``retries.max_attempts`` counts retries, so one call makes three attempts here.)
    """
    clients = make_clients(region="us-east-1", config=botocore.config.Config(retries={"mode": "standard", "max_attempts": 2}))
    injector = FaultInjector(rate=1.0, seed=1, faults=(fault,))
    clients.session.events.register("before-send", injector)
    with pytest.raises(AwsFailure) as caught:
        with aws_errors("could not list the zones"):
            clients.ec2.describe_availability_zones()
    assert caught.value.what == "could not list the zones"
    assert caught.value.why and "Traceback" not in caught.value.render()
    assert len(injector.attempts) == 3


# --- launches and a sweep under 20 % faults ---------------------------------------------------


def test_twenty_launches_and_a_sweep_come_out_exact_under_twenty_percent_faults(clients, tmp_path):
    scientist = Scientist(clients, tmp_path, Caps(max_instances=2000, max_lease_hours=168, max_spend_usd=1e6))
    injector = FaultInjector(rate=RATE, seed=SEED)
    results: dict[str, LaunchResult] = {}
    for n in range(LAUNCHES):
        name = f"faulty-{n:02d}"
        results[name] = scientist.launch(name, PER_ANNEX, injector)
        assert len(results[name].instance_ids) == PER_ANNEX and results[name].shortfall == 0

    # The faults were real: every kind, on the launch call too, at about the set rate.
    assert {fault for _, fault in injector.injected} == set(ALL_FAULTS)
    assert any(operation == "ec2.CreateFleet" for operation, _ in injector.injected)
    assert 0.1 < len(injector.injected) / len(injector.attempts) < 0.3

    # What a clean client sees: exactly 50 per annex, no duplicate, every tag right.
    instances = every_instance(clients)
    ids = [i["InstanceId"] for i in instances]
    assert len(ids) == len(set(ids)) == LAUNCHES * PER_ANNEX
    by_annex: dict[str, set[str]] = defaultdict(set)
    expiry_tag = to_tag(scientist.now + LEASE)
    for instance in instances:
        tags = tags_of(instance)
        assert instance["State"]["Name"] in LIVE_STATES
        assert {k: tags.get(k) for k in contract.REQUIRED_INSTANCE_TAGS} == {
            contract.TAG_ANNEX_NAME: tags.get(contract.TAG_ANNEX_NAME),
            contract.TAG_PROJECT: PROJECT,
            contract.TAG_EXPIRY: expiry_tag,
            contract.TAG_IDLE: str(15 * 60),
            contract.TAG_OWNER: USER,
        }
        assert from_tag(tags[contract.TAG_EXPIRY]) == scientist.now + LEASE
        by_annex[tags[contract.TAG_ANNEX_NAME]].add(instance["InstanceId"])
    assert by_annex == {name: set(result.instance_ids) for name, result in results.items()}

    # The sweep, also under 20 % faults: three annexes past their lease, one instance without expiry.
    stack = read_stack(clients, contract.DEFAULT_STACK_NAME)
    ended = ["faulty-03", "faulty-11", "faulty-17"]
    past = to_tag(datetime.now(timezone.utc) - timedelta(hours=1))
    doomed = set().union(*(by_annex[name] for name in ended))
    clients.ec2.create_tags(Resources=sorted(doomed), Tags=[{"Key": contract.TAG_EXPIRY, "Value": past}])
    no_expiry = sorted(by_annex["faulty-05"])[0]
    clients.ec2.delete_tags(Resources=[no_expiry], Tags=[{"Key": contract.TAG_EXPIRY}])
    doomed.add(no_expiry)
    configuration = {name: _object_keys(clients, stack.bucket, contract.annex_prefix(PROJECT, name)) for name in ended}
    assert all(len(keys) == 3 for keys in configuration.values())

    admin = make_clients(region="us-east-1")
    sweep_faults = FaultInjector(rate=RATE, seed=SWEEP_SEED)
    admin.session.events.register("before-send", sweep_faults)
    # An hour on, the three ended annexes' configuration is past the grace period too.
    sweep_time = datetime.now(timezone.utc) + timedelta(hours=1)
    report = run_enforcer(admin, bucket=stack.bucket, prices=regional_prices("us-east-1"), dry_run=False,
                          now=sweep_time, log=lambda _line: None)
    assert sweep_faults.injected and sweep_faults.injected[0][0] == "ec2.DescribeInstances"
    assert report.errors == []
    assert {t[0] for t in report.terminated} == doomed
    assert len(report.terminated) == len(doomed)
    assert report.kept == LAUNCHES * PER_ANNEX - len(doomed)
    assert sorted(report.deleted_objects) == sorted(key for keys in configuration.values() for key in keys)

    still_live = {i["InstanceId"] for i in live(clients)}
    assert still_live == set(ids) - doomed
    for name in ended:
        assert _object_keys(clients, stack.bucket, contract.annex_prefix(PROJECT, name)) == []
    assert _object_keys(clients, stack.bucket, contract.annex_prefix(PROJECT, "faulty-05"))

    # Idempotent: the same sweep again finds nothing to do.
    again = run_enforcer(admin, bucket=stack.bucket, prices=regional_prices("us-east-1"), dry_run=False,
                         now=sweep_time, log=lambda _line: None)
    assert again.terminated == [] and again.deleted_objects == [] and again.errors == []


def _object_keys(clients: AwsClients, bucket: str, prefix: str) -> list[str]:
    return [o["Key"] for o in clients.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


# --- an answer lost after AWS acted -----------------------------------------------------------


def test_a_lost_create_fleet_answer_is_retried_and_no_duplicate_survives(clients, tmp_path):
    """The CreateFleet request reaches the emulator and is executed; its answer is dropped.

    botocore retries the request with the same ClientToken. On AWS that makes the retry
    idempotent: it returns the first fleet's instances. moto ignores ClientToken (FIELD-NOTES), so
    here the retry launches a second set. condor_annex notices that its fleet request was retried,
    lists the annex once, and terminates the instances no answer named: exactly the requested
    number stays alive, every one tagged.
    """
    scientist = Scientist(clients, tmp_path, Caps(max_instances=100, max_lease_hours=168, max_spend_usd=1e5))
    lost = LoseResponse("ec2.CreateFleet", then=CONNECTION_CLOSED)
    tokens: list[str] = []

    def client_token(request, event_name, **_):
        if event_name.endswith(".CreateFleet"):
            tokens.append(urllib.parse.parse_qs(request.body if isinstance(request.body, str) else request.body.decode())["ClientToken"][0])

    result = scientist.launch("lost-answer", 10, client_token, lost)
    assert lost.executed == [200]  # the emulator did launch the first attempt
    assert len(tokens) == 2 and tokens[0] == tokens[1]  # the retry is the same request to AWS

    on_server = ids_of_annex(clients, "lost-answer")
    assert len(result.instance_ids) == 10 and result.shortfall == 0
    assert result.duplicates_ended == 10  # moto launched the annex twice; the second set was ended
    assert on_server == set(result.instance_ids)
    assert untagged(live(clients)) == []

    own = scientist.clients()
    ctx = AnnexContext(scientist.bundle, own, read_stack(own, scientist.bundle.stack_name), scientist.now)
    rows = annex_status(ctx, annex_name="lost-answer", condor_config=None).rows
    assert {row.instance.instance_id for row in rows} == on_server


# --- Ctrl-C at every request of a launch ------------------------------------------------------


def test_ctrl_c_at_any_request_of_a_launch_leaves_nothing_untagged_and_a_rerun_is_exact(clients, tmp_path):
    """Ctrl-C is raised from inside the SDK as the N-th request of a launch is about to leave,
    for every N; then the same launch is run again with the same annex name.

    A request interrupted before it leaves never reaches AWS, so every such cut must leave no
    instance and the rerun must launch the annex whole. The last case interrupts after the
    emulator executed CreateFleet (the answer never arrives): the instances exist, and the rerun
    must refuse with BadInput naming them.
    """
    count = 12
    scientist = Scientist(clients, tmp_path, Caps(max_instances=1000, max_lease_hours=168, max_spend_usd=1e6))
    recorder = Recorder()
    scientist.launch("reference", count, recorder)
    sequence = recorder.attempts
    assert sequence[0] == "cloudformation.DescribeStacks" and sequence[-1] == "ec2.CreateFleet"
    assert sequence.count("ec2.CreateFleet") == 1

    outcomes: dict[str, str] = {}
    for nth in range(1, len(sequence) + 1):
        name = f"cut-{nth:02d}"
        with pytest.raises(Interrupted):
            scientist.launch(name, count, InterruptAt(nth))
        assert untagged(live(clients)) == [], f"Ctrl-C before {sequence[nth - 1]} left untagged instances"
        outcomes[name] = _rerun(scientist, clients, name, count)
    assert set(outcomes.values()) == {"launched"}  # nothing ever reached AWS

    late = LoseResponse("ec2.CreateFleet", then="interrupt")
    with pytest.raises(Interrupted):
        scientist.launch("cut-late", count, late)
    assert late.executed == [200]
    assert untagged(live(clients)) == []
    assert _rerun(scientist, clients, "cut-late", count) == "reported"


def _rerun(scientist: Scientist, admin: AwsClients, name: str, count: int) -> str:
    """The same launch again, without faults: it launches the annex whole, or names what exists."""
    existing = ids_of_annex(admin, name)
    if not existing:
        result = scientist.launch(name, count)
        assert len(result.instance_ids) == count and ids_of_annex(admin, name) == set(result.instance_ids)
        stack = read_stack(admin, contract.DEFAULT_STACK_NAME)
        assert len(_object_keys(admin, stack.bucket, contract.annex_prefix(PROJECT, name))) == 3
        return "launched"
    with pytest.raises(BadInput) as caught:
        scientist.launch(name, count)
    why = caught.value.why
    assert f"{len(existing)} live instance(s)" in why
    named = {word.strip(",") for word in why.split() if word.startswith("i-")}
    assert named and named <= existing and len(named) == min(len(existing), 10)
    assert ids_of_annex(admin, name) == existing  # the refusal changed nothing
    return "reported"
