"""Launches and sweeps while AWS misbehaves: throttling, 5xx answers, broken connections, Ctrl-C.

The scientist's client makes only ``lambda.Invoke`` requests (the stack's broker does the rest,
inside AWS), and ``annex-admin enforce`` one Invoke of the enforcer. Faults are injected between
the tools and the emulator at botocore's ``before-send`` event (tests/fault_support/faults.py), on
the session the tools' clients are made from, so the tools run unchanged with their own retry
configuration (an Invoke: 3 attempts). Nothing is patched.

An injected fault happens before the request leaves, so the emulator never executes a failed
attempt: these tests prove that retries, as configured, carry every call through and that no
partial step leaves an instance without its tags. What happens when AWS executes a request and
the answer is lost is a different case: ``test_a_lost_launch_answer…`` shows it for the
scientist's launch Invoke, and ``test_a_lost_create_fleet_answer…`` for the broker's own
CreateFleet.
"""

from __future__ import annotations

import io
import json
import urllib.parse
import uuid
import zipfile
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import botocore.config
import pytest

from annex_admin.enforce import run_enforcer
from annex_cloud.broker.ops import RetryNoticingCreateFleet, end_duplicates
from annex_cloud.caps import Caps
from annex_cloud.expiry import format_expiry_tag, parse_expiry_tag
from annex_cloud.fleet import FleetSpec, run_fleet
from annex_common.aws import AwsClients, aws_errors, invoke_function, make_clients
from annex_common.errors import AwsFailure, BadInput
from annex_user.context import AnnexContext, open_context
from annex_user.launch import LaunchRequest, LaunchResult, execute_launch, plan_launch
from annex_user.manage import annex_status
from templates import contract
from tests.fault_support.faults import (
    ALL_FAULTS,
    CONNECTION_CLOSED,
    SERVER_ERROR,
    THROTTLE,
    FaultInjector,
    InterruptAt,
    Interrupted,
    InvokeLog,
    LoseResponse,
    Recorder,
)
from tests.flows import PROJECT, USER, deploy_stack, issue_bundle, write_pool

RATE = 0.2
# With this seed, 20 launches (40 Invokes) meet every kind of fault, several on launch Invokes,
# and no Invoke meets three in a row (which would outlast its 3 attempts).
SEED = 20261218
# The sweep makes one Invoke; this seed's first draw faults it, so the sweep is sure to meet a
# fault and its retry then goes through.
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
        self.outputs: dict[str, str] = deploy_stack(admin).outputs
        self.bundle_path = folder / "bundle.toml"
        issue_bundle(admin, self.bundle_path, caps=caps)
        self.condor_config = str(write_pool(folder / "pool").condor_config)
        self.now = datetime.now(timezone.utc).replace(microsecond=0)

    def context(self, *handlers: Handler) -> AnnexContext:
        """What condor_annex opens, with the handlers registered before any client exists."""
        ctx = open_context(self.bundle_path, now=self.now)
        assert ctx.broker.clients._cache == {}
        for handler in handlers:
            ctx.broker.clients.session.events.register("before-send", handler)
        return ctx

    def launch(self, annex_name: str, count: int, *handlers: Handler) -> LaunchResult:
        """What `condor_annex --annex-name NAME --instances N --yes` does: open, plan, execute."""
        ctx = self.context(*handlers)
        plan = plan_launch(
            ctx,
            LaunchRequest(PROJECT, self.now + LEASE, count, annex_name=annex_name),
        )
        return execute_launch(ctx, plan)


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


def object_keys(clients: AwsClients, bucket: str, prefix: str) -> list[str]:
    return [o["Key"] for o in clients.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


ECHO = "def handler(event, context):\n    return {'echo': event}\n"


def echo_function(clients: AwsClients, name: str = "echo") -> str:
    """A one-line function the emulator runs, to Invoke in the harness tests."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("echo.py", ECHO)
    role = clients.iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }))["Role"]["Arn"]
    clients.awslambda.create_function(
        FunctionName=name, Runtime="python3.12", Role=role, Handler="echo.handler", Code={"ZipFile": archive.getvalue()}
    )
    return name


# --- the harness itself -----------------------------------------------------------------------


def test_a_handler_on_the_session_reaches_clients_made_after_it(clients):
    recorder = Recorder()
    clients.session.events.register("before-send", recorder)
    assert clients._cache == {}  # no client existed when the handler was registered
    clients.ec2.describe_availability_zones()
    clients.s3.list_buckets()
    clients.cloudformation.list_stacks()
    clients.awslambda.list_functions()
    assert recorder.attempts == [
        "ec2.DescribeAvailabilityZones", "s3.ListBuckets", "cloudformation.ListStacks", "lambda.ListFunctions",
    ]


@pytest.mark.parametrize("fault", ALL_FAULTS)
@pytest.mark.parametrize("operation", ["ec2", "s3", "cloudformation", "lambda"])
def test_each_fault_is_retried_by_the_tools_retry_configuration(clients, fault, operation):
    function = echo_function(make_clients(region=clients.region)) if operation == "lambda" else ""
    injector = FaultInjector(rate=1.0, seed=1, faults=(fault,), limit=2)
    clients.session.events.register("before-send", injector)
    call = {
        "ec2": lambda: clients.ec2.describe_availability_zones(),
        "s3": lambda: clients.s3.list_buckets(),
        "cloudformation": lambda: clients.cloudformation.list_stacks(),
        # The tools' own Invoke, with its own retry configuration (3 attempts): two faults fit.
        "lambda": lambda: invoke_function(clients, function, {"n": 1}, "could not ask the function"),
    }[operation]
    answer = call()
    assert len(injector.injected) == 2
    assert len(injector.attempts) == 3  # two faults, then the real answer
    if operation == "lambda":
        assert answer == {"echo": {"n": 1}} and set(injector.attempts) == {"lambda.Invoke"}


@pytest.mark.parametrize("fault", ALL_FAULTS)
@pytest.mark.parametrize("operation", ["ec2", "lambda"])
def test_a_fault_that_outlasts_the_retries_is_one_readable_failure(aws, fault, operation):
    """Two retries instead of the tools' eight keep the EC2 case fast; the mapping to errors is the
    same. An Invoke keeps the tools' own configuration (three attempts), so the scientist's
    broker request is the one tested.

    (botocore's ``retries.max_attempts`` counts retries, so one call makes three attempts here.)
    """
    clients = make_clients(region="us-east-1", config=botocore.config.Config(retries={"mode": "standard", "max_attempts": 2}))
    injector = FaultInjector(rate=1.0, seed=1, faults=(fault,))
    clients.session.events.register("before-send", injector)
    what = {"ec2": "could not list the zones", "lambda": "could not ask the broker"}[operation]
    with pytest.raises(AwsFailure) as caught:
        if operation == "ec2":
            with aws_errors(what):
                clients.ec2.describe_availability_zones()
        else:  # no request ever leaves, so the function need not exist
            invoke_function(clients, "SomeStack-broker", {"op": "status"}, what)
    assert caught.value.what == what
    assert caught.value.why and "Traceback" not in caught.value.render()
    assert len(injector.attempts) == 3
    if operation == "lambda":
        # Lambda's REST-JSON error shape is read as Lambda's own codes.
        expected = {THROTTLE: "TooManyRequestsException", SERVER_ERROR: "ServiceException"}.get(fault)
        if expected:
            assert caught.value.why.startswith(f"{expected}: "), caught.value.why


# --- launches and a sweep under 20 % faults ---------------------------------------------------


@pytest.mark.slow
def test_twenty_launches_and_a_sweep_come_out_exact_under_twenty_percent_faults(clients, tmp_path):
    scientist = Scientist(clients, tmp_path, Caps(max_instances=2000, max_lease_hours=168, max_spend_usd=1e6))
    invokes = InvokeLog()  # registered first: it sees every attempt, the faulted ones too
    injector = FaultInjector(rate=RATE, seed=SEED)
    results: dict[str, LaunchResult] = {}
    for n in range(LAUNCHES):
        name = f"faulty-{n:02d}"
        results[name] = scientist.launch(name, PER_ANNEX, invokes, injector)
        assert len(results[name].instance_ids) == PER_ANNEX and results[name].shortfall == 0

    # The faults were real: every kind, on her Invokes, launch Invokes among them, about the set rate.
    assert {fault for _, fault in injector.injected} == set(ALL_FAULTS)
    assert {operation for operation, _ in injector.injected} == {"lambda.Invoke"}
    assert set(injector.attempts) == {"lambda.Invoke"}  # her client asks the broker, nothing else
    assert 0.1 < len(injector.injected) / len(injector.attempts) < 0.3
    launch_attempts: dict[str, int] = defaultdict(int)
    for op, request_id in invokes.calls:
        if op == "launch":
            launch_attempts[request_id] += 1
    # One request id per launch, and a retried launch carried the same id on every attempt.
    assert len(launch_attempts) == LAUNCHES and "" not in launch_attempts
    assert sum(1 for attempts in launch_attempts.values() if attempts > 1) >= 2
    # A fault happens before the request leaves: the broker never saw a failed attempt, so it
    # never had to replay an answer.
    assert not any(result.answer.get("replayed") for result in results.values())

    # What a clean client sees: exactly 50 per annex, no duplicate, every tag right.
    instances = every_instance(clients)
    ids = [i["InstanceId"] for i in instances]
    assert len(ids) == len(set(ids)) == LAUNCHES * PER_ANNEX
    by_annex: dict[str, set[str]] = defaultdict(set)
    expiry_tag = format_expiry_tag(scientist.now + LEASE)
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
        assert parse_expiry_tag(tags[contract.TAG_EXPIRY]) == scientist.now + LEASE
        by_annex[tags[contract.TAG_ANNEX_NAME]].add(instance["InstanceId"])
    assert by_annex == {name: set(result.instance_ids) for name, result in results.items()}

    # The sweep, also under 20 % faults: three annexes past their lease, one instance without expiry.
    bucket = scientist.outputs[contract.OUT_BUCKET]
    ended = ["faulty-03", "faulty-11", "faulty-17"]
    past = format_expiry_tag(datetime.now(timezone.utc) - timedelta(hours=1))
    doomed = set().union(*(by_annex[name] for name in ended))
    clients.ec2.create_tags(Resources=sorted(doomed), Tags=[{"Key": contract.TAG_EXPIRY, "Value": past}])
    no_expiry = sorted(by_annex["faulty-05"])[0]
    clients.ec2.delete_tags(Resources=[no_expiry], Tags=[{"Key": contract.TAG_EXPIRY}])
    doomed.add(no_expiry)
    configuration = {name: object_keys(clients, bucket, contract.annex_prefix(PROJECT, name)) for name in ended}
    assert all(len(keys) == 2 for keys in configuration.values())  # annex.env and the token

    admin = make_clients(region="us-east-1")
    sweep_faults = FaultInjector(rate=RATE, seed=SWEEP_SEED)
    admin.session.events.register("before-send", sweep_faults)
    enforcer = scientist.outputs[contract.OUT_ENFORCER_FUNCTION]
    report = run_enforcer(admin, enforcer, dry_run=False)
    assert sweep_faults.injected and sweep_faults.injected[0][0] == "lambda.Invoke"
    assert sweep_faults.attempts == ["lambda.Invoke"] * (len(sweep_faults.injected) + 1)
    assert report["dry_run"] is False and report["errors"] == []
    terminated = [t["instance_id"] for t in report["terminated"]]
    assert set(terminated) == doomed and len(terminated) == len(doomed)
    assert report["kept"] == LAUNCHES * PER_ANNEX - len(doomed)
    # The enforcer runs in AWS on its own clock, so the test cannot move it past the configuration
    # grace period (900 s) as it once did with `now`: the ended annexes' objects were uploaded
    # minutes ago, so the sweep must keep them (a launch may be uploading right now). Their
    # deletion once old is tested on the sweep itself (tests/functional/test_enforcer.py).
    assert report["deleted_objects"] == []
    for name in ended:
        assert object_keys(clients, bucket, contract.annex_prefix(PROJECT, name)) == configuration[name]

    still_live = {i["InstanceId"] for i in live(clients)}
    assert still_live == set(ids) - doomed

    # Idempotent: the same sweep again finds nothing to do.
    again = run_enforcer(admin, enforcer, dry_run=False)
    assert again["terminated"] == [] and again["deleted_objects"] == [] and again["errors"] == []
    assert again["kept"] == LAUNCHES * PER_ANNEX - len(doomed)
    print(
        f"faults: {len(injector.injected)} of {len(injector.attempts)} launch Invokes "
        f"({sorted({f for _, f in injector.injected})}); sweep: {len(sweep_faults.injected)} of "
        f"{len(sweep_faults.attempts)}"
    )


# --- an answer lost after AWS acted -----------------------------------------------------------


def test_a_lost_launch_answer_is_retried_and_launches_nothing_twice(clients, tmp_path):
    """The launch Invoke reaches the emulator and the broker launches; its answer is dropped.

    botocore retries the Invoke with the same payload, so with the same request id: the broker
    finds its record of that id and answers with the first launch's result (``replayed``)
    instead of launching again. Exactly the requested number runs, every one tagged, and the
    client reports the very instances that run.
    """
    count = 10
    scientist = Scientist(clients, tmp_path, Caps(max_instances=100, max_lease_hours=168, max_spend_usd=1e5))
    invokes = InvokeLog()
    lost = LoseResponse("lambda.Invoke", nth=2, then=CONNECTION_CLOSED)  # plan, then launch

    result = scientist.launch("lost-answer", count, invokes, lost)
    assert lost.executed == [200]  # the emulator did run the broker on the first attempt
    assert json.loads(lost.lost[0])["op"] == "launch"
    assert [op for op, _ in invokes.calls] == ["plan_launch", "launch", "launch"]
    assert invokes.calls[1][1] and invokes.calls[1] == invokes.calls[2]  # the retry is the same request
    assert result.answer.get("replayed") is True

    on_server = ids_of_annex(clients, "lost-answer")
    assert len(result.instance_ids) == count and result.shortfall == 0
    assert on_server == set(result.instance_ids)
    everything = every_instance(clients)
    assert len(everything) == count  # nothing was launched twice, not even briefly
    assert untagged(everything) == []

    rows = annex_status(scientist.context(), annex_name="lost-answer", condor_config=None, instances=True).rows
    assert {row.data["instance_id"] for row in rows} == on_server


def test_a_lost_create_fleet_answer_inside_the_broker_leaves_no_duplicate(clients):
    """The broker's CreateFleet reaches EC2 and is executed; its answer is dropped.

    This happens inside the broker's process (the emulator runs the function as a child of its
    own), where a test can inject no fault, so the broker's own pieces are tested here as a
    component, on a client the test can fault: ``run_fleet`` through ``RetryNoticingCreateFleet``
    (as ``_launch_locked`` calls them), then ``end_duplicates``, against a deployed stack's launch
    templates and subnets.

    botocore retries the request with the same ClientToken. On AWS that makes the retry
    idempotent: it returns the first fleet's instances. moto ignores ClientToken (FIELD-NOTES), so
    here the retry launches a second set. The broker notices that its fleet request was retried,
    lists the annex once, and terminates the instances no answer named: exactly the requested
    number stays alive, every one tagged.
    """
    count, name = 10, "lost-fleet"
    outputs = deploy_stack(clients).outputs
    templates = dict(pair.split("=", 1) for pair in outputs[contract.OUT_LAUNCH_TEMPLATES].split(","))
    subnets = [s for s in outputs[contract.OUT_SUBNETS].split(",") if s]
    itype = sorted(templates)[0]
    tags = {
        contract.TAG_ANNEX_NAME: name,
        contract.TAG_PROJECT: PROJECT,
        contract.TAG_EXPIRY: format_expiry_tag(datetime.now(timezone.utc) + LEASE),
        contract.TAG_IDLE: str(15 * 60),
        contract.TAG_OWNER: USER,
    }
    spec = FleetSpec(count=count, launch_templates={itype: templates[itype]}, pools=[(itype, s) for s in subnets],
                     tags=tags, spot=False, max_price={itype: 1.0})

    broker_side = make_clients(region=clients.region)  # the suite's fake admin keys
    tokens: list[str] = []

    def client_token(request, event_name, **_):
        if event_name.endswith(".CreateFleet"):
            body = request.body if isinstance(request.body, str) else request.body.decode()
            tokens.append(urllib.parse.parse_qs(body)["ClientToken"][0])

    lost = LoseResponse("ec2.CreateFleet", then=CONNECTION_CLOSED)
    broker_side.session.events.register("before-send", client_token)
    broker_side.session.events.register("before-send", lost)
    create_fleet = RetryNoticingCreateFleet(broker_side.ec2)

    fleet = run_fleet(create_fleet, spec, token_prefix=uuid.uuid4().hex)
    assert lost.executed == [200]  # the emulator did launch the first attempt
    assert len(tokens) == 2 and tokens[0] == tokens[1]  # the retry is the same request to EC2
    assert create_fleet.retried and fleet.rounds == 1
    assert len(fleet.instances) == count
    assert len(ids_of_annex(clients, name)) == 2 * count  # moto launched the annex twice

    ended = end_duplicates(broker_side.ec2, PROJECT, name, set(fleet.instances))
    assert len(ended) == count and not set(ended) & set(fleet.instances)
    assert ids_of_annex(clients, name) == set(fleet.instances)
    assert untagged(live(clients)) == []


# --- Ctrl-C at every request of a launch ------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_at_any_request_of_a_launch_leaves_nothing_untagged_and_a_rerun_is_exact(clients, tmp_path):
    """Ctrl-C is raised from inside the SDK as the N-th request of a launch is about to leave,
    for every N; then the same launch is run again with the same annex name.

    A launch is two Invokes of the broker: plan, then launch. A request interrupted before it
    leaves never reaches AWS, so every such cut must leave no instance and the rerun must launch
    the annex whole. The last case interrupts after the broker executed the launch (the answer
    never arrives): the instances exist, and the rerun must refuse with BadInput naming them.
    """
    count = 12
    scientist = Scientist(clients, tmp_path, Caps(max_instances=1000, max_lease_hours=168, max_spend_usd=1e6))
    recorder, invokes = Recorder(), InvokeLog()
    scientist.launch("reference", count, recorder, invokes)
    sequence = recorder.attempts
    assert sequence == ["lambda.Invoke", "lambda.Invoke"]
    assert [op for op, _ in invokes.calls] == ["plan_launch", "launch"]

    outcomes: dict[str, str] = {}
    for nth in range(1, len(sequence) + 1):
        name = f"cut-{nth:02d}"
        with pytest.raises(Interrupted):
            scientist.launch(name, count, InterruptAt(nth))
        assert untagged(live(clients)) == [], f"Ctrl-C before Invoke {nth} left untagged instances"
        assert ids_of_annex(clients, name) == set()
        outcomes[name] = _rerun(scientist, clients, name, count)
    assert set(outcomes.values()) == {"launched"}  # nothing ever reached AWS

    late = LoseResponse("lambda.Invoke", nth=2, then="interrupt")
    with pytest.raises(Interrupted):
        scientist.launch("cut-late", count, late)
    assert late.executed == [200] and json.loads(late.lost[0])["op"] == "launch"
    assert len(ids_of_annex(clients, "cut-late")) == count  # the broker launched the annex whole
    assert untagged(live(clients)) == []
    assert _rerun(scientist, clients, "cut-late", count) == "reported"


def _rerun(scientist: Scientist, admin: AwsClients, name: str, count: int) -> str:
    """The same launch again, without faults: it launches the annex whole, or names what exists."""
    existing = ids_of_annex(admin, name)
    if not existing:
        result = scientist.launch(name, count)
        assert len(result.instance_ids) == count and ids_of_annex(admin, name) == set(result.instance_ids)
        bucket = scientist.outputs[contract.OUT_BUCKET]
        assert len(object_keys(admin, bucket, contract.annex_prefix(PROJECT, name))) == 2  # annex.env and the token
        return "launched"
    with pytest.raises(BadInput) as caught:
        scientist.launch(name, count)
    assert "already in use" in caught.value.what
    why = caught.value.why
    assert f"{len(existing)} live instance(s)" in why
    named = {word.strip(",") for word in why.split() if word.startswith("i-")}
    assert named and named <= existing and len(named) == min(len(existing), 10)
    assert ids_of_annex(admin, name) == existing  # the refusal changed nothing
    return "reported"
