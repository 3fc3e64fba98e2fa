"""`annex-admin build-image` through its core (annex_admin.image) against the emulator.

What the emulator cannot do, and how it is checked instead:
- it runs no instance, so the builder's part (report through the presigned URL in its user data,
  then stop) is played by tests/image_support/builder.py with the same URL and API the real one
  uses; the builder's script itself runs for real, in bash, in test_image_builder.py;
- it makes an image "available" at once and never fails one, and it cannot tag snapshots from
  CreateImage (build-image tags them afterwards, which it can): a failure at the step that waits
  for the image is injected on the tool's client instead;
- it never fires EventBridge rules: the enforcer's decision about the builder is asked for by a
  sweep (in process, at a chosen time) and through the deployed function (now).

Faults are injected at botocore's events on the tool's own session (tests/fault_support), never
in the emulator: one request fails once, or Ctrl-C is raised as it is about to leave.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import botocore.awsrequest
import pytest

from annex_admin import image
from annex_admin.check import check_setup
from annex_admin.enforce import run_enforcer, stack_scope
from annex_admin.remembered import current_choices
from annex_admin.stack import read_stack
from annex_admin.teardown import teardown, teardown_preview
from annex_cloud import enforcer as enf
from annex_cloud.cost import PriceBook
from annex_cloud.expiry import format_expiry_tag
from annex_cloud.registry import Registry
from annex_common.aws import AwsClients, make_clients
from annex_common.errors import AwsFailure, NotReady
from templates import contract
from templates.node_bootstrap import bootstrap_artifact
from tests import emulator as emu
from tests.fault_support.faults import InterruptAt, Recorder, error_response, operation_of
from tests.flows import PROJECT, deploy_stack, issue_bundle
from tests.image_support.builder import VERSION, FakeBuilder, live_builders, user_data_of

STACK = contract.DEFAULT_STACK_NAME
FAST = image.Timing(poll_seconds=0.05, build_timeout=20, image_timeout=20, report_grace=1.0)


@pytest.fixture
def stack(clients, tmp_path):
    """A stack with one project (whose launch template versions must follow the new image)."""
    deploy_stack(clients)
    issue_bundle(clients, tmp_path / "bundle.toml")
    return read_stack(clients, STACK)


def tool_clients(*handlers: tuple[str, Any]) -> AwsClients:
    """The administrator's clients as build-image gets them, with handlers on their session
    before any client exists (so every client carries them)."""
    fresh = make_clients(region=emu.REGION)
    for event, handler in handlers:
        fresh.session.events.register(event, handler)
    return fresh


@dataclasses.dataclass
class Attempt:
    plan: image.BuildPlan | None = None
    result: image.BuildResult | None = None
    lines: list[str] = dataclasses.field(default_factory=list)


def run_build(builder: FakeBuilder | None = None, *handlers: tuple[str, Any], timing: image.Timing = FAST,
              attempt: Attempt | None = None) -> Attempt:
    """Plan (plain clients), then execute with the handlers on the tool's clients: the requests
    they see are the build's own."""
    attempt = attempt if attempt is not None else Attempt()
    builder = builder or FakeBuilder()
    attempt.plan = image.plan_build(make_clients(region=emu.REGION), STACK, "24.0")
    clients = tool_clients(("before-call.ec2.DescribeInstances", builder.hook), *handlers)
    try:
        attempt.result = image.execute_build(clients, attempt.plan, attempt.lines.append, timing)
    finally:
        print("\n".join(attempt.lines))
    return attempt


def nothing_of_the_build_left(clients: AwsClients, plan: image.BuildPlan, builder_ids: list[str]) -> None:
    ec2 = clients.ec2
    assert live_builders(clients) == []
    build = [{"Name": f"tag:{contract.TAG_IMAGE_BUILD}", "Values": [plan.build_id]}]
    assert ec2.describe_images(Owners=["self"], Filters=build)["Images"] == []
    assert ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [plan.image_name]}])["Images"] == []
    assert ec2.describe_snapshots(OwnerIds=["self"], Filters=build)["Snapshots"] == []
    for builder in builder_ids:
        made = ec2.describe_snapshots(OwnerIds=["self"], Filters=[
            {"Name": "description", "Values": [f"*CreateImage({builder})*"]}])["Snapshots"]
        assert made == [], made
    assert current_choices(clients, STACK).image_id == plan.current_image  # the stack kept its image


def default_images(clients: AwsClients, stack) -> set[str]:
    """The image of each of the stack's launch templates' default version."""
    found = set()
    for template_id in stack.launch_templates.values():
        versions = clients.ec2.describe_launch_template_versions(LaunchTemplateId=template_id, Versions=["$Default"])
        found.add(versions["LaunchTemplateVersions"][0]["LaunchTemplateData"]["ImageId"])
    return found


# --- the whole build ---------------------------------------------------------------------------


def test_build_image_leaves_one_tagged_image_as_the_stacks_default_and_nothing_running(clients, stack):
    before = default_images(clients, stack)
    attempt = run_build()
    plan, result, lines = attempt.plan, attempt.result, attempt.lines
    ec2 = clients.ec2

    # One image, tagged with the stack, the build, the HTCondor it holds, the date and its base.
    facts = image.describe_image(clients, result.image_id)
    assert facts is not None and facts.state == "available" and facts.name == plan.image_name
    assert {k: facts.tags.get(k) for k in (contract.TAG_STACK, contract.TAG_IMAGE_BUILD, contract.TAG_HTCONDOR_VERSION,
                                           contract.TAG_HTCONDOR_SERIES, contract.TAG_BASE_IMAGE)} == {
        contract.TAG_STACK: STACK, contract.TAG_IMAGE_BUILD: plan.build_id, contract.TAG_HTCONDOR_VERSION: VERSION,
        contract.TAG_HTCONDOR_SERIES: "24.0", contract.TAG_BASE_IMAGE: plan.current_image,
    }
    assert facts.tags[contract.TAG_BUILT_AT].endswith("Z")
    images, snapshots = image.built_images(clients, STACK)
    assert [i.image_id for i in images] == [result.image_id]
    assert snapshots == result.snapshots == list(facts.snapshots) and snapshots
    for snapshot in ec2.describe_snapshots(SnapshotIds=snapshots)["Snapshots"]:
        tags = {t["Key"]: t["Value"] for t in snapshot["Tags"]}
        assert tags[contract.TAG_STACK] == STACK and tags[contract.TAG_IMAGE_BUILD] == plan.build_id

    # The stack's default: its recorded settings and every launch template's default version,
    # and the project's versions copy the new defaults.
    assert current_choices(clients, STACK).image_id == result.image_id
    assert default_images(clients, stack) == {result.image_id} != before
    assert result.projects_followed == [PROJECT]
    node = Registry(clients.client("dynamodb"), stack.output(contract.OUT_REGISTRY_TABLE)).node(PROJECT)
    for version in node.templates.values():
        data = ec2.describe_launch_template_versions(
            LaunchTemplateId=version.template_id, Versions=[str(version.version)])["LaunchTemplateVersions"][0]
        assert data["LaunchTemplateData"]["ImageId"] == result.image_id

    # The builder: ended, and it was what the plan said, carrying a lease and no project.
    assert live_builders(clients) == []
    described = ec2.describe_instances(InstanceIds=[result.builder])["Reservations"][0]["Instances"][0]
    assert described["State"]["Name"] == "terminated"
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert {k: tags.get(k) for k in plan.builder_tags()} == plan.builder_tags()
    assert contract.TAG_PROJECT not in tags
    assert described["ImageId"] == plan.base_image and described["InstanceType"] == plan.instance_type
    assert described["SubnetId"] in stack.subnets
    # Nothing else runs: no instance at all is left alive.
    live = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]}])
    assert live["Reservations"] == []
    # The report is gone from the code bucket.
    listed = clients.s3.list_objects_v2(Bucket=plan.code_bucket, Prefix=image.RESULT_PREFIX)
    assert listed.get("KeyCount", 0) == 0
    # Progress said what happened, step by step.
    text = "\n".join(lines)
    for words in ("Launching the builder", "is stopped, and has reported", f"Built: HTCondor {VERSION}",
                  f"Image {result.image_id} is available", "Terminating the builder", "UPDATE_COMPLETE"):
        assert words in text, words


def test_the_builder_is_launched_to_build_with_the_stacks_bootstrap_and_to_stop_not_terminate(clients, stack):
    plan = image.plan_build(clients, STACK, "24.x")
    builder = image.launch_builder(clients, plan, lambda _line: None)
    try:
        text = user_data_of(clients, builder)
        artifact = bootstrap_artifact()
        assert f"digest='{artifact.digest}'" in text and 'exec "$script" build' in text
        assert "ANNEX_HTCONDOR_SERIES='24.x'" in text and f"ANNEX_BUCKET='{stack.bucket}'" in text
        assert artifact.key in text and plan.result_key in text  # the two presigned URLs
        assert '"$script" boot' not in text
        behaviour = clients.ec2.describe_instance_attribute(InstanceId=builder, Attribute="instanceInitiatedShutdownBehavior")
        assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "stop"
        # No instance profile: the builder reads nothing of the stack but what the URLs name.
        described = clients.ec2.describe_instances(InstanceIds=[builder])["Reservations"][0]["Instances"][0]
        assert "IamInstanceProfile" not in described
    finally:
        clients.ec2.terminate_instances(InstanceIds=[builder])


def test_the_enforcer_keeps_the_builder_during_its_lease_and_ends_it_after(clients, stack):
    plan = image.plan_build(clients, STACK, "24.0")
    builder = image.launch_builder(clients, plan, lambda _line: None)
    # The deployed enforcer, now: the builder's lease runs, it belongs to no project's caps.
    report = run_enforcer(clients, stack.output(contract.OUT_ENFORCER_FUNCTION), dry_run=True)
    assert builder not in {t["instance_id"] for t in report["terminated"]}
    # A sweep once the lease has passed (the emulator's clock cannot be moved: in process).
    registry = Registry(clients.client("dynamodb"), stack.output(contract.OUT_REGISTRY_TABLE))
    late = enf.sweep(clients.ec2, clients.s3, bucket=stack.bucket, prices=PriceBook({}), caps=registry.caps,
                     now=plan.lease_end + timedelta(minutes=1), stack=stack_scope(stack), log=lambda _l: None)
    assert [(t[0], t[3]) for t in late.terminated] == [(builder, f"lease expired at {format_expiry_tag(plan.lease_end)}")]
    assert live_builders(clients) == []


def test_a_launch_after_the_build_uses_the_built_image(clients, stack, tmp_path):
    from annex_user.context import open_context
    from annex_user.launch import LaunchRequest, execute_launch, plan_launch
    from datetime import datetime, timezone

    result = run_build().result
    ctx = open_context(tmp_path / "bundle.toml")
    request = LaunchRequest(PROJECT, datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=3), 3,
                            annex_name="after-build")
    launched = execute_launch(ctx, plan_launch(ctx, request))
    described = clients.ec2.describe_instances(InstanceIds=launched.instance_ids)
    assert {i["ImageId"] for r in described["Reservations"] for i in r["Instances"]} == {result.image_id}


# --- failures ----------------------------------------------------------------------------------


class FailOnce:
    """The nth request of one operation fails once, with an error AWS does not retry."""

    def __init__(self, operation: str, nth: int = 1) -> None:
        self.operation, self.nth, self.seen, self.fired = operation, nth, 0, False

    def __call__(self, request: botocore.awsrequest.AWSPreparedRequest, event_name: str, **_: Any):
        if operation_of(event_name) != self.operation or self.fired:
            return None
        self.seen += 1
        if self.seen < self.nth:
            return None
        self.fired = True
        service = self.operation.split(".", 1)[0]
        return error_response(service, request.url, 400, "UnauthorizedOperation" if service == "ec2" else "AccessDenied",
                              f"injected failure of {self.operation}")


# Each step's requests: the launch, the wait (instance and report), the image, its wait, the
# snapshots' tags, the builder's end, and the change set before it is executed.
STEP_REQUESTS = [
    "ec2.RunInstances",
    "ec2.DescribeInstances",
    "s3.GetObject",
    "ec2.CreateImage",
    "ec2.DescribeImages",
    "ec2.CreateTags",
    "ec2.TerminateInstances",
    "cloudformation.CreateChangeSet",
    "cloudformation.ExecuteChangeSet",
]


@pytest.mark.parametrize("operation", STEP_REQUESTS)
def test_a_failure_at_each_step_leaves_no_builder_image_or_snapshot(clients, stack, operation):
    fail, builder, attempt = FailOnce(operation), FakeBuilder(), Attempt()
    with pytest.raises(AwsFailure) as raised:
        run_build(builder, ("before-send", fail), attempt=attempt)
    assert fail.fired
    message = raised.value.render()
    assert "build-image failed while" in message and f"injected failure of {operation}" in message
    assert "nothing of this build is left" in message
    nothing_of_the_build_left(clients, attempt.plan, builder.played)


def test_ctrl_c_at_any_request_of_a_build_leaves_nothing(clients, stack):
    """Ctrl-C as each kind of request of a build is about to leave (the first of its kind, up to
    the change set's execution): the builder is ended and nothing of the build is left."""
    recorder = Recorder()
    run_build(FakeBuilder(), ("before-send", recorder))
    executed = recorder.attempts.index("cloudformation.ExecuteChangeSet")
    firsts = sorted({recorder.attempts.index(op) for op in set(recorder.attempts[: executed + 1])})
    assert len(firsts) >= 10, recorder.attempts
    for index in firsts:
        builder, attempt = FakeBuilder(), Attempt()
        with pytest.raises(KeyboardInterrupt):
            run_build(builder, ("before-send", InterruptAt(index + 1)), attempt=attempt)
        nothing_of_the_build_left(clients, attempt.plan, builder.played)


def test_a_builder_that_reports_a_failure_is_ended_and_its_reason_shown(clients, stack):
    builder = FakeBuilder(status="failed")
    with pytest.raises(AwsFailure) as raised:
        run_build(builder)
    message = raised.value.render()
    assert "could not install HTCondor" in message and "dnf failed" in message
    assert live_builders(clients) == [] and image.built_images(clients, STACK) == ([], [])


def test_a_build_that_never_ends_is_ended_at_its_time_limit(clients, stack):
    builder = FakeBuilder(stop=False, status="ok")
    builder.play = lambda _instance_id: None  # a builder that never reports nor stops
    with pytest.raises(AwsFailure) as raised:
        run_build(builder, timing=dataclasses.replace(FAST, build_timeout=0.3))
    assert "did not finish within" in raised.value.render()
    assert live_builders(clients) == []


def test_a_failure_once_the_stack_names_the_image_keeps_the_image(clients, stack):
    """After the change set ran, the stack's templates name the image: it is never removed."""
    fail = FailOnce("cloudformation.DescribeStackEvents", nth=2)
    with pytest.raises(AwsFailure):
        run_build(FakeBuilder(), ("before-send", fail))
    assert fail.fired
    images, _snapshots = image.built_images(clients, STACK)
    assert len(images) == 1 and current_choices(clients, STACK).image_id == images[0].image_id
    assert live_builders(clients) == []


# --- the plan ----------------------------------------------------------------------------------


def test_the_plan_changes_nothing_and_bounds_the_cost_by_the_lease(aws, clients, stack):
    from datetime import datetime, timezone

    start = aws.log_offset()
    before = datetime.now(timezone.utc).replace(microsecond=0)
    plan = image.plan_build(clients, STACK, "24.0")
    operations = {op for _key, _service, op in aws.calls_since(start)}
    writes = {op for op in operations if not op.startswith(("Describe", "Get", "List", "HEAD", "GET"))}
    assert operations and writes == set(), (operations, writes)
    prices = Registry(clients.client("dynamodb"), stack.output(contract.OUT_REGISTRY_TABLE)).prices()
    cheapest = min(stack.instance_types, key=lambda t: (prices.price(t), t))
    assert plan.instance_type == cheapest and plan.hourly_usd == prices.price(cheapest)
    assert plan.most_cost_usd == pytest.approx(prices.price(cheapest) * 2)
    assert timedelta(0) <= plan.lease_end - (before + image.BUILD_LEASE) <= timedelta(seconds=5)
    assert plan.base_image == plan.current_image
    assert len(plan.steps()) == 5 and plan.to_dict()["most_cost_usd"] == round(plan.most_cost_usd, 4)


def test_a_stack_not_up_to_date_is_refused_before_anything_is_launched(clients, stack):
    body = clients.cloudformation.get_template(StackName=STACK)["TemplateBody"]
    body["Description"] = "changed behind annex-admin's back"
    import json

    clients.cloudformation.update_stack(StackName=STACK, TemplateBody=json.dumps(body), Capabilities=["CAPABILITY_NAMED_IAM"])
    with pytest.raises(NotReady) as raised:
        image.plan_build(clients, STACK, "24.0")
    assert "annex-admin setup" in raised.value.render()
    assert live_builders(clients) == []


def test_a_second_build_starts_from_the_base_not_from_the_first_build(clients, stack):
    first = run_build().result
    plan = image.plan_build(clients, STACK, "24.0")
    assert plan.current_image == first.image_id and plan.base_image != first.image_id
    assert "earlier build" in plan.base_image_why


# --- check-setup and teardown ------------------------------------------------------------------


def image_item(clients: AwsClients, **kwargs):
    report = check_setup(clients, STACK, **kwargs)
    return next(i for i in report.items if i.name == "image")


def test_check_setup_reports_the_stacks_image_its_age_and_htcondor(clients, stack):
    chosen = image_item(clients)
    assert chosen.ok and not chosen.warning and "HTCondor not known" in chosen.detail
    assert "chosen by setup (the region's latest Amazon Linux 2023 then)" in chosen.detail
    result = run_build().result
    built = image_item(clients)
    assert built.ok and not built.warning
    assert result.image_id in built.detail and "built by build-image" in built.detail and f"HTCondor {VERSION}" in built.detail
    from datetime import datetime, timezone

    old = image_item(clients, now=datetime.now(timezone.utc) + image.IMAGE_STALE_AFTER + timedelta(days=1))
    assert old.ok and old.warning and "run `annex-admin build-image`" in old.detail
    clients.ec2.deregister_image(ImageId=result.image_id)
    gone = image_item(clients)
    assert not gone.ok and "does not exist" in gone.detail


def test_teardown_removes_the_images_and_snapshots_build_image_made_and_no_other(clients, stack):
    result = run_build().result
    # An image of the administrator's own, tagged with the stack but not made by build-image, and
    # one build-image made for another stack: both stay.
    spare = clients.ec2.run_instances(ImageId=result.image_id, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    own = clients.ec2.create_image(InstanceId=spare, Name="the-admins-own", TagSpecifications=[
        {"ResourceType": "image", "Tags": [{"Key": contract.TAG_STACK, "Value": STACK}]}])["ImageId"]
    other = clients.ec2.create_image(InstanceId=spare, Name="another-stacks-build", TagSpecifications=[
        {"ResourceType": "image", "Tags": [{"Key": contract.TAG_STACK, "Value": "Other"},
                                           {"Key": contract.TAG_IMAGE_BUILD, "Value": "Other-1"}]}])["ImageId"]
    clients.ec2.terminate_instances(InstanceIds=[spare])
    ours_snapshots = list(result.snapshots)

    preview = teardown_preview(clients, STACK)
    assert any(result.image_id in line for line in preview)
    assert all(own not in line and other not in line for line in preview)
    assert any(ours_snapshots[0] in line for line in preview)
    assert image.describe_image(clients, result.image_id) is not None  # the preview changed nothing

    report = teardown(clients, STACK, force=True, progress=lambda _l: None)
    assert any(result.image_id in item for item in report.removed)
    assert image.describe_image(clients, result.image_id) is None
    remaining = {s["SnapshotId"] for s in clients.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert not remaining & set(ours_snapshots)
    assert image.describe_image(clients, own) is not None and image.describe_image(clients, other) is not None
