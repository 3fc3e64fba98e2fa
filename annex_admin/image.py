"""`annex-admin build-image`: an image with HTCondor and the node files installed, made the stack's
default, so that annex nodes boot without a package repository in the way.

``plan_build`` reads everything it needs and changes nothing: the stack (which must be up to date
with this annex-admin, so that the last step changes only the image), its prices, the instance
type, the image to build from, the code bucket's node bootstrap. ``BuildPlan`` is that plan as
data; ``execute_build`` carries it out, step by step:

1. launch one builder from the stack's own launch template (network, security group, encrypted
   volume, IMDSv2, metadata tags), tagged from creation with a lease like an annex's (the annex
   name, expiry, idle and owner tags, no project), so the enforcer ends it at the lease end if
   the build hangs, and with the build's id; its user data (``templates.node_bootstrap``) runs
   the stack's node bootstrap in build mode and asks EC2 to stop, not terminate, it at power-off;
2. wait for the builder's report (a presigned PUT to the code bucket) and its stop;
3. make the image from the stopped builder, tagged with the stack, the build, the HTCondor
   version and series, the date and the base image; its snapshots are tagged likewise;
4. wait until the image is available;
5. terminate the builder;
6. make the image the stack's default: the same change set ``setup --image-id`` makes, after
   which every project gets versions of the new templates.

A failure or Ctrl-C at any step ends the builder and removes the half-made image and its
snapshots (found by the build's id, the image's name and the snapshots' CreateImage
description, so even a request whose answer was lost leaves nothing), unless the stack already
names the image. No typer here: the CLI is ``annex_admin.cli``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import botocore.config
import botocore.exceptions

from annex_admin.changes import ChangePlan
from annex_admin.stack import StackInfo, read_stack
from annex_cloud.cost import most_cost
from annex_cloud.expiry import format_expiry_tag
from annex_cloud.registry import Registry
from annex_common.aws import AwsClients, aws_errors, error_code
from annex_common.errors import AwsFailure, BadInput, NotReady
from templates import contract
from templates.node_bootstrap import HTCONDOR_SERIES_DEFAULT, bootstrap_artifact, builder_user_data
from templates.settings import StackSettings

Progress = Callable[[str], None]

# As annex_cloud/node/bootstrap.sh's SERIES_RE (a test keeps them equal): N.0 is a long-term-support
# series of HTCondor, N.x the feature releases of N.
SERIES_PATTERN = "^[0-9]{1,3}[.](0|x)$"
# The series HTCondor publishes (a repository each, research.cs.wisc.edu/htcondor/repo/<series>),
# from the one annex nodes ask for on: a series not released yet has no repository, and a build
# of it would fail on the builder, an hour and an instance later. Add one here when HTCondor
# releases it.
KNOWN_SERIES = ("24.0", "24.x", "25.0", "25.x")
# The builder's lease: the enforcer ends it then, whatever happened to this command.
BUILD_LEASE = timedelta(hours=2)
# The builder must have reported and stopped within this; the image must be available within that.
BUILD_TIMEOUT = timedelta(minutes=60)
IMAGE_TIMEOUT = timedelta(minutes=60)
# check-setup warns about a stack image older than this: its packages miss that long of updates.
IMAGE_STALE_AFTER = timedelta(days=90)
RESULT_PREFIX = "image-builds/"
BUILDER_ANNEX_PREFIX = "image-build-"
# Where the presigned URLs work: S3 refuses Signature Version 2 on buckets made since 2020.
PRESIGN_CONFIG = botocore.config.Config(signature_version="s3v4", retries={"mode": "standard", "total_max_attempts": 8})
CAPACITY_CODES = {"InsufficientInstanceCapacity", "Unsupported", "InsufficientCapacity"}
LIVE_BUILDER_STATES = ["pending", "running", "stopping", "stopped"]


def validate_series(series: str | None) -> str:
    value = series or HTCONDOR_SERIES_DEFAULT
    if not re.match(SERIES_PATTERN, value):
        raise BadInput(
            f"--htcondor-series {value!r} is not an HTCondor series",
            "a series is a long-term-support release like 24.0, or the feature releases like 24.x",
            f"Pass for example --htcondor-series {HTCONDOR_SERIES_DEFAULT}, or omit it.",
        )
    if _series_floor(value) < _series_floor(HTCONDOR_SERIES_DEFAULT):
        raise BadInput(
            f"HTCondor series {value} is older than {HTCONDOR_SERIES_DEFAULT}, which annex nodes ask for",
            "a node finding an older HTCondor on its image installs the newer series at every boot",
            f"Pass --htcondor-series {HTCONDOR_SERIES_DEFAULT} or newer.",
        )
    if value not in KNOWN_SERIES:
        raise BadInput(
            f"HTCondor has no series {value}",
            f"the series HTCondor publishes are {', '.join(KNOWN_SERIES)}",
            f"Pass one of them, or omit --htcondor-series for {HTCONDOR_SERIES_DEFAULT}.",
        )
    return value


def _series_floor(series: str) -> tuple[int, int]:
    major, minor = series.split(".")
    return int(major), 1 if minor == "x" else int(minor)


@dataclass(frozen=True)
class Timing:
    """How often to look and how long to wait (the tests shorten them)."""

    poll_seconds: float = 5.0
    build_timeout: float = BUILD_TIMEOUT.total_seconds()
    image_timeout: float = IMAGE_TIMEOUT.total_seconds()
    # After the builder stopped, how long its report may take to be readable.
    report_grace: float = 60.0
    # A line of progress at least this often, even when nothing changed.
    heartbeat_seconds: float = 60.0


@dataclass(frozen=True)
class BuildPlan:
    """Everything build-image will do, decided before anything is changed."""

    stack_name: str
    region: str
    build_id: str
    series: str
    instance_type: str
    launch_template_id: str
    subnet_ids: tuple[str, ...]
    base_image: str
    base_image_why: str
    current_image: str
    hourly_usd: float
    price_source: str
    lease_end: datetime
    most_cost_usd: float
    image_name: str
    code_bucket: str
    config_bucket: str
    bootstrap_key: str
    bootstrap_digest: str
    owner: str
    settings: StackSettings  # the stack as it is; the last step changes only its image

    @property
    def result_key(self) -> str:
        return f"{RESULT_PREFIX}{self.build_id}/result"

    @property
    def builder_name(self) -> str:
        return f"{BUILDER_ANNEX_PREFIX}{self.build_id.rsplit('-', 1)[-1]}"

    def builder_tags(self) -> dict[str, str]:
        """A lease like an annex's (the enforcer ends the builder at its end) and no project: it
        counts against no scientist's caps."""
        return {
            contract.TAG_ANNEX_NAME: self.builder_name,
            contract.TAG_EXPIRY: format_expiry_tag(self.lease_end),
            contract.TAG_IDLE: str(int(BUILD_LEASE.total_seconds())),
            contract.TAG_OWNER: self.owner[:255],
            contract.TAG_STACK: self.stack_name,
            contract.TAG_IMAGE_BUILD: self.build_id,
        }

    def image_tags(self, htcondor_version: str, built_at: datetime) -> dict[str, str]:
        return {
            contract.TAG_STACK: self.stack_name,
            contract.TAG_IMAGE_BUILD: self.build_id,
            contract.TAG_HTCONDOR_VERSION: htcondor_version,
            contract.TAG_HTCONDOR_SERIES: self.series,
            contract.TAG_BUILT_AT: format_expiry_tag(built_at),
            contract.TAG_BASE_IMAGE: self.base_image,
        }

    def steps(self) -> list[str]:
        minutes = int(BUILD_TIMEOUT.total_seconds() // 60)
        return [
            f"launch one {self.instance_type} builder from the stack's launch template {self.launch_template_id} "
            f"with image {self.base_image} ({self.base_image_why}); its lease ends "
            f"{format_expiry_tag(self.lease_end)}, when the enforcer ends it whatever happens",
            f"install HTCondor {self.series} and the node files on it (no pool is configured); "
            f"wait at most {minutes} min for its report and its stop",
            f"make image {self.image_name} from it, tagged with the stack, the build and the HTCondor version; "
            "wait until it is available",
            "terminate the builder",
            f"make the image the default of stack {self.stack_name} (in place of {self.current_image}), "
            "and bring every project's launch template versions up to date",
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "stack_name": self.stack_name,
            "region": self.region,
            "build_id": self.build_id,
            "htcondor_series": self.series,
            "instance_type": self.instance_type,
            "base_image": self.base_image,
            "current_image": self.current_image,
            "image_name": self.image_name,
            "hourly_usd": self.hourly_usd,
            "lease_end": format_expiry_tag(self.lease_end),
            "most_cost_usd": round(self.most_cost_usd, 4),
            "steps": self.steps(),
        }


@dataclass
class BuildResult:
    image_id: str
    htcondor_version: str
    snapshots: list[str]
    builder: str
    projects_followed: list[str] = field(default_factory=list)


# --- the plan ----------------------------------------------------------------------------------


def plan_build(clients: AwsClients, stack_name: str, series: str, now: datetime | None = None) -> BuildPlan:
    """Read the stack and the region; change nothing. Raises when the build cannot be made."""
    from annex_admin import deploy
    from annex_admin.remembered import current_choices

    now = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    stack = read_stack(clients, stack_name)
    # The stack's own settings, as setup would keep them with no option given.
    choices = current_choices(clients, stack_name)
    if choices is None:
        raise NotReady(f"stack {stack_name} records no settings", "it was made by an earlier annex-admin",
                       "Run `annex-admin setup` first, then build-image.")
    request = StackSettings(
        region=clients.region, stack_name=stack_name, image_id=choices.image_id or "",
        image_chosen_by_setup=choices.image_chosen_by_setup,
        instance_types=choices.instance_types or contract.DEFAULT_INSTANCE_TYPES, ssh_cidr=choices.ssh_cidr or None,
    )
    settings, _ = deploy.resolve_settings(clients, request)
    _require_current(clients, stack_name, settings)
    code_bucket = stack.output(contract.OUT_CODE_BUCKET)
    artifact = bootstrap_artifact()
    with aws_errors(f"could not find the node bootstrap in the code bucket {code_bucket}", "Run `annex-admin setup`."):
        clients.s3.head_object(Bucket=code_bucket, Key=artifact.key)
    instance_type, hourly, source = _cheapest_priced(clients, stack)
    base, why = _base_image(clients, settings.image_id)
    stamp = now.strftime("%Y%m%dt%H%M%Sz")
    build_id = f"{stack_name}-{stamp}"
    lease_end = now + BUILD_LEASE
    return BuildPlan(
        stack_name=stack_name,
        region=clients.region,
        build_id=build_id,
        series=series,
        instance_type=instance_type,
        launch_template_id=stack.launch_templates[instance_type],
        subnet_ids=tuple(stack.subnets),
        base_image=base,
        base_image_why=why,
        current_image=settings.image_id,
        hourly_usd=hourly,
        price_source=source,
        lease_end=lease_end,
        most_cost_usd=most_cost(1, {instance_type: hourly}, BUILD_LEASE.total_seconds() / 3600),
        image_name=f"condor-annex-{stack_name}-htcondor-{series}-{stamp}"[:128],
        code_bucket=code_bucket,
        config_bucket=stack.bucket,
        bootstrap_key=artifact.key,
        bootstrap_digest=artifact.digest,
        owner=deploy_identity(clients),
        settings=settings,
    )


def deploy_identity(clients: AwsClients) -> str:
    with aws_errors("could not tell who these credentials belong to"):
        return clients.client("sts").get_caller_identity()["Arn"]


def _require_current(clients: AwsClients, stack_name: str, settings: StackSettings) -> None:
    """The stack is what this annex-admin's setup would make of it: the last step then changes
    its image and nothing else."""
    import json

    from templates.stack import template_json

    with aws_errors(f"could not read the template of stack {stack_name}"):
        body: Any = clients.cloudformation.get_template(StackName=stack_name, TemplateStage="Original")["TemplateBody"]
    current = json.loads(body) if isinstance(body, str) else body
    if json.loads(template_json(settings)) != json.loads(json.dumps(current)):
        raise NotReady(
            f"stack {stack_name} is not up to date with this annex-admin",
            "making the image its default would also apply other changes, which build-image does not show",
            "Run `annex-admin setup` first (it shows and applies them), then build-image.",
        )


def _cheapest_priced(clients: AwsClients, stack: StackInfo) -> tuple[str, float, str]:
    registry = Registry(clients.client("dynamodb"), stack.output(contract.OUT_REGISTRY_TABLE))
    with aws_errors("could not read the stack's prices"):
        book = registry.prices()
    priced = {t: p for t in stack.instance_types if book is not None and (p := book.price(t)) is not None}
    if book is None or not priced:
        raise NotReady(
            f"no hourly price is known for the instance types of stack {stack.name}",
            "build-image shows the most the builder can cost before it launches one, and never guesses a price",
            "Run `annex-admin setup` (it stores the region's prices), then build-image again.",
        )
    itype = min(priced, key=lambda t: (priced[t], t))
    return itype, priced[itype], book.explained


def _base_image(clients: AwsClients, current: str) -> tuple[str, str]:
    """The image to build from: the stack's own, unless build-image made it (then the region's
    latest Amazon Linux 2023, so that a rebuild also takes the system's updates)."""
    from annex_admin.deploy import latest_image

    facts = describe_image(clients, current)
    if facts is not None and facts.built_by_us:
        return latest_image(clients), "the region's latest Amazon Linux 2023; the stack's image is an earlier build"
    return current, "the stack's current image"


# --- what an image is --------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFacts:
    image_id: str
    name: str
    created: datetime | None
    state: str
    tags: dict[str, str]
    snapshots: tuple[str, ...]

    @property
    def built_by_us(self) -> bool:
        return bool(self.tags.get(contract.TAG_IMAGE_BUILD))

    @property
    def htcondor_version(self) -> str | None:
        return self.tags.get(contract.TAG_HTCONDOR_VERSION)


def _image_facts(raw: dict[str, Any]) -> ImageFacts:
    created = None
    try:
        created = datetime.fromisoformat(str(raw.get("CreationDate", "")).replace("Z", "+00:00"))
    except ValueError:
        pass
    if created is not None and created.tzinfo is None:
        created = created.replace(tzinfo=timezone.utc)
    snapshots = tuple(
        m["Ebs"]["SnapshotId"] for m in raw.get("BlockDeviceMappings", []) if m.get("Ebs", {}).get("SnapshotId")
    )
    return ImageFacts(
        image_id=raw["ImageId"],
        name=raw.get("Name", ""),
        created=created,
        state=raw.get("State", ""),
        tags={t["Key"]: t.get("Value", "") for t in raw.get("Tags", [])},
        snapshots=snapshots,
    )


def describe_image(clients: AwsClients, image_id: str) -> ImageFacts | None:
    """The image, or None when EC2 does not know it (deregistered, or never there)."""
    try:
        images = clients.ec2.describe_images(ImageIds=[image_id])["Images"]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable", "InvalidAMIID.Malformed"):
            return None
        with aws_errors(f"could not describe image {image_id}"):
            raise
    return _image_facts(images[0]) if images else None


def image_summary(facts: ImageFacts | None, image_id: str, now: datetime,
                  chosen_by_setup: bool | None = None) -> tuple[bool, bool, str]:
    """(usable, stale, words) about the stack's image, for check-setup; ``chosen_by_setup`` as the
    stack records it (StackSettings.image_chosen_by_setup)."""
    if facts is None:
        return False, False, (f"{image_id} does not exist (deregistered?): no node can launch; "
                              "run `annex-admin build-image` or `annex-admin setup --image-id AMI`")
    if facts.state not in ("available", ""):
        return False, False, f"{image_id} is {facts.state}: no node can launch from it"
    age = now - facts.created if facts.created else None
    days = f"{age.days} day(s) old" if age is not None else "of unknown age"
    if facts.built_by_us:
        words = (f"{image_id}, built by build-image on {facts.tags.get(contract.TAG_BUILT_AT, '?')} ({days}), "
                 f"HTCondor {facts.htcondor_version or 'unknown'}: nodes install nothing at boot")
    else:
        whose = {True: "chosen by setup (the region's latest Amazon Linux 2023 then)",
                 False: "given with --image-id", None: "chosen by setup or given with --image-id"}[chosen_by_setup]
        words = (f"{image_id} ({facts.name or 'unnamed'}), {whose}, {days}, HTCondor not known: each node "
                 "installs HTCondor at boot unless the image has it (annex-admin build-image makes one that does)")
    stale = age is not None and age > IMAGE_STALE_AFTER
    if stale:
        words += (f"; older than {IMAGE_STALE_AFTER.days} days, so its packages miss that long of updates: "
                  "run `annex-admin build-image`")
    return True, stale, words


def built_images(clients: AwsClients, stack_name: str) -> tuple[list[ImageFacts], list[str]]:
    """The images and snapshots build-image made for this stack: both tags, checked again here.
    Snapshots are those tagged so, and those of the images (tagged only once the image exists)."""
    wanted = [
        {"Name": f"tag:{contract.TAG_STACK}", "Values": [stack_name]},
        {"Name": "tag-key", "Values": [contract.TAG_IMAGE_BUILD]},
    ]
    with aws_errors(f"could not list the images build-image made for stack {stack_name}"):
        images = [
            _image_facts(raw) for raw in clients.ec2.describe_images(Owners=["self"], Filters=wanted)["Images"]
        ]
        snapshots = [
            s for page in clients.ec2.get_paginator("describe_snapshots").paginate(OwnerIds=["self"], Filters=wanted)
            for s in page["Snapshots"]
        ]
    images = [i for i in images if i.tags.get(contract.TAG_STACK) == stack_name and i.built_by_us]
    ours = {s["SnapshotId"] for s in snapshots
            if {t["Key"]: t.get("Value") for t in s.get("Tags", [])}.get(contract.TAG_STACK) == stack_name}
    for image in images:
        ours.update(image.snapshots)
    return images, sorted(ours)


# --- the executor ------------------------------------------------------------------------------


@dataclass
class _Made:
    """What this build made so far: what an interrupted or failed build must remove."""

    builder: str | None = None
    image: str | None = None
    snapshots: set[str] = field(default_factory=set)
    asked_default: bool = False


def execute_build(
    clients: AwsClients, plan: BuildPlan, progress: Progress, timing: Timing = Timing()
) -> BuildResult:
    made = _Made()
    step = "launching the builder"
    try:
        made.builder = launch_builder(clients, plan, progress)
        step = "building on the builder"
        report = _wait_for_build(clients, plan, made.builder, progress, timing)
        version = report.get("htcondor_version", "")
        step = "making the image"
        made.image = _create_image(clients, plan, made.builder, version, progress)
        step = "waiting for the image"
        facts = _wait_for_image(clients, made.image, progress, timing)
        made.snapshots.update(facts.snapshots)
        _tag_snapshots(clients, plan, facts, version)
        step = "ending the builder"
        _end_builder(clients, made.builder, progress, timing)
        step = "making the image the stack's default"
        made.asked_default = True
        followed = _make_default(clients, plan, made.image, progress)
        _remove_report(clients, plan)
        return BuildResult(made.image, version, sorted(made.snapshots), made.builder, followed)
    except BaseException as exc:
        left = _undo(clients, plan, made, progress, timing)
        if isinstance(exc, KeyboardInterrupt):
            if not left:
                progress("Interrupted: the builder was ended and nothing of this build is left")
                raise
            raise AwsFailure(f"build-image was interrupted while {step}", "Ctrl-C",
                             "Still there, to remove by hand: " + "; ".join(left) + ".") from None
        why = exc.why if isinstance(exc, AwsFailure) else str(exc)
        what = exc.what if isinstance(exc, AwsFailure) else f"{type(exc).__name__}"
        if left:
            next_step = "Still there, to remove by hand: " + "; ".join(left) + "."
        else:
            next_step = "The builder was ended and nothing of this build is left. Fix the cause, then run build-image again."
        raise AwsFailure(f"build-image failed while {step}: {what}", why, next_step) from exc


def launch_builder(clients: AwsClients, plan: BuildPlan, progress: Progress) -> str:
    presign = clients.client("s3", config=PRESIGN_CONFIG)
    seconds = int(BUILD_LEASE.total_seconds())
    user_data = builder_user_data(
        bucket=plan.config_bucket,
        region=plan.region,
        series=plan.series,
        bootstrap_url=presign.generate_presigned_url(
            "get_object", Params={"Bucket": plan.code_bucket, "Key": plan.bootstrap_key}, ExpiresIn=seconds),
        result_url=presign.generate_presigned_url(
            "put_object", Params={"Bucket": plan.code_bucket, "Key": plan.result_key}, ExpiresIn=seconds),
    )
    tags = [{"Key": k, "Value": v} for k, v in plan.builder_tags().items()]
    volume_tags = [{"Key": contract.TAG_STACK, "Value": plan.stack_name},
                   {"Key": contract.TAG_IMAGE_BUILD, "Value": plan.build_id}]
    last: botocore.exceptions.ClientError | None = None
    for subnet in plan.subnet_ids:
        progress(f"Launching the builder ({plan.instance_type}, image {plan.base_image}) in subnet {subnet}")
        try:
            answer = clients.ec2.run_instances(
                LaunchTemplate={"LaunchTemplateId": plan.launch_template_id, "Version": "$Default"},
                ImageId=plan.base_image,
                InstanceType=plan.instance_type,
                SubnetId=subnet,
                MinCount=1,
                MaxCount=1,
                UserData=user_data,
                # The builder stops itself when done; the image is made from the stopped instance.
                InstanceInitiatedShutdownBehavior="stop",
                TagSpecifications=[{"ResourceType": "instance", "Tags": tags},
                                   {"ResourceType": "volume", "Tags": volume_tags}],
                # A retried request (a lost answer) launches nothing twice on AWS.
                ClientToken=hashlib.sha256(f"{plan.build_id}/{subnet}".encode()).hexdigest()[:32],
            )
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in CAPACITY_CODES:
                last = exc
                progress(f"  no capacity there ({error_code(exc)}); trying the next zone")
                continue
            with aws_errors("could not launch the builder"):
                raise
        builder = answer["Instances"][0]["InstanceId"]
        progress(f"Builder {builder} launched; installing HTCondor {plan.series} (a few minutes)")
        return builder
    assert last is not None
    with aws_errors("no zone of the stack has capacity for the builder"):
        raise last


def _state_of(clients: AwsClients, instance_id: str) -> tuple[str, str]:
    with aws_errors(f"could not look at the builder {instance_id}"):
        answer = clients.ec2.describe_instances(InstanceIds=[instance_id])
    for reservation in answer["Reservations"]:
        for instance in reservation["Instances"]:
            if instance["InstanceId"] == instance_id:
                reason = instance.get("StateReason", {}).get("Message", "") or instance.get("StateTransitionReason", "")
                return instance["State"]["Name"], reason
    return "terminated", "EC2 no longer lists it"


def _read_report(clients: AwsClients, plan: BuildPlan) -> dict[str, str] | None:
    try:
        body = clients.s3.get_object(Bucket=plan.code_bucket, Key=plan.result_key)["Body"].read()
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            return None
        with aws_errors("could not read the builder's report"):
            raise
    report: dict[str, str] = {}
    for line in body.decode(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and re.match(r"^[a-z_]{1,40}$", key):
            report[key] = value[:300]
    return report


def _wait_for_build(
    clients: AwsClients, plan: BuildPlan, builder: str, progress: Progress, timing: Timing
) -> dict[str, str]:
    started = time.monotonic()
    last_state, last_line, stopped_at = "", started, None
    while True:
        state, reason = _state_of(clients, builder)
        report = _read_report(clients, plan)
        now = time.monotonic()
        if state != last_state or now - last_line >= timing.heartbeat_seconds:
            progress(f"Builder {builder} is {state}" + (", and has reported" if report else ""))
            last_state, last_line = state, now
        if report is not None and report.get("status") != "ok":
            raise AwsFailure(
                "the builder could not install HTCondor and the node files",
                report.get("reason") or f"it reported {report.get('status', 'no status')!r}",
                "",
            )
        if state in ("shutting-down", "terminated"):
            raise AwsFailure("the builder ended before its build was done", reason or state)
        if state == "stopped":
            if report is not None:
                if not re.match(r"^[0-9]+\.[0-9]+\.[0-9]+$", report.get("htcondor_version", "")):
                    raise AwsFailure("the builder reported no usable HTCondor version", repr(report.get("htcondor_version")))
                progress(f"Built: HTCondor {report['htcondor_version']}; the builder has stopped")
                return report
            stopped_at = stopped_at or now
            if now - stopped_at > timing.report_grace:
                raise AwsFailure("the builder stopped without reporting its build", reason or "no report arrived")
        if now - started > timing.build_timeout:
            raise AwsFailure(
                f"the build did not finish within {int(timing.build_timeout // 60)} minutes",
                f"the builder is {state}",
                "",
            )
        time.sleep(timing.poll_seconds)


def _create_image(clients: AwsClients, plan: BuildPlan, builder: str, version: str, progress: Progress) -> str:
    progress(f"Making image {plan.image_name} from the builder")
    tags = [{"Key": k, "Value": v} for k, v in plan.image_tags(version, datetime.now(timezone.utc)).items()]
    with aws_errors("could not make the image"):
        answer = clients.ec2.create_image(
            InstanceId=builder,
            Name=plan.image_name,
            Description=f"condor-annex node image for stack {plan.stack_name}: HTCondor {version}",
            TagSpecifications=[{"ResourceType": "image", "Tags": tags}],
        )
    return answer["ImageId"]


def _wait_for_image(clients: AwsClients, image_id: str, progress: Progress, timing: Timing) -> ImageFacts:
    started = time.monotonic()
    last_state, last_line = "", started
    while True:
        facts = describe_image(clients, image_id)
        state = facts.state if facts else "missing"
        now = time.monotonic()
        if state != last_state or now - last_line >= timing.heartbeat_seconds:
            progress(f"Image {image_id} is {state}")
            last_state, last_line = state, now
        if facts is not None and state == "available":
            return facts
        if state in ("failed", "deregistered", "invalid", "error", "missing"):
            raise AwsFailure(f"image {image_id} was not made", f"its state is {state}")
        if now - started > timing.image_timeout:
            raise AwsFailure(f"image {image_id} was not available within {int(timing.image_timeout // 60)} minutes",
                             f"its state is {state}")
        time.sleep(timing.poll_seconds)


def _tag_snapshots(clients: AwsClients, plan: BuildPlan, facts: ImageFacts, version: str) -> None:
    """Snapshots cannot be tagged by CreateImage in the emulator; tagged here, once known."""
    if not facts.snapshots:
        return
    tags = [{"Key": k, "Value": v} for k, v in plan.image_tags(version, datetime.now(timezone.utc)).items()
            if k in (contract.TAG_STACK, contract.TAG_IMAGE_BUILD, contract.TAG_HTCONDOR_VERSION)]
    with aws_errors("could not tag the image's snapshots"):
        clients.ec2.create_tags(Resources=list(facts.snapshots), Tags=tags)


def _end_builder(clients: AwsClients, builder: str, progress: Progress, timing: Timing) -> None:
    progress(f"Terminating the builder {builder}")
    with aws_errors(f"could not terminate the builder {builder}"):
        try:
            clients.ec2.terminate_instances(InstanceIds=[builder])
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != "InvalidInstanceID.NotFound":
                raise
    deadline = time.monotonic() + 600
    while _state_of(clients, builder)[0] != "terminated" and time.monotonic() < deadline:
        time.sleep(timing.poll_seconds)


def _make_default(clients: AwsClients, plan: BuildPlan, image_id: str, progress: Progress) -> list[str]:
    """The stack's launch templates take the image: setup's own change set, checked to change
    nothing but them."""
    from annex_admin.deploy import deploy

    def only_the_image(change_plan: ChangePlan) -> None:
        others = [c for c in change_plan.changes if c.resource_type != "AWS::EC2::LaunchTemplate"]
        if change_plan.creating or others:
            raise AwsFailure(
                f"making the image the default of stack {plan.stack_name} would change more than its launch templates",
                ", ".join(f"{c.action} {c.logical_id}" for c in others) or "the stack would be created",
                "Run `annex-admin setup` first, then build-image again.",
            )

    progress(f"Making {image_id} the default image of stack {plan.stack_name}")
    result = deploy(clients, dataclasses.replace(plan.settings, image_id=image_id, image_chosen_by_setup=False),
                    progress, approve=only_the_image)
    return result.projects_followed


def _remove_report(clients: AwsClients, plan: BuildPlan) -> None:
    try:
        clients.s3.delete_object(Bucket=plan.code_bucket, Key=plan.result_key)
    except botocore.exceptions.ClientError:
        pass  # the code bucket goes with teardown anyway


def _stack_names(clients: AwsClients, stack_name: str, image_id: str) -> bool:
    from annex_admin.remembered import current_choices

    choices = current_choices(clients, stack_name)
    return choices is not None and choices.image_id == image_id


def _undo(clients: AwsClients, plan: BuildPlan, made: _Made, progress: Progress, timing: Timing) -> list[str]:
    """End the builder and remove the half-made image and snapshots; what could not be removed."""
    left: list[str] = []
    ec2 = clients.ec2
    build_filter = [{"Name": f"tag:{contract.TAG_IMAGE_BUILD}", "Values": [plan.build_id]}]

    def attempt(what: str, action: Callable[[], Any]) -> None:
        try:
            action()
            progress(f"  removed {what}")
        except botocore.exceptions.ClientError as exc:
            if error_code(exc).endswith(".NotFound"):
                return
            left.append(f"{what} ({error_code(exc)})")
        except Exception as exc:  # the endpoint gone, a parse error: say what is left
            left.append(f"{what} ({type(exc).__name__})")

    progress("Cleaning up the build")
    # Found by the build's tags and the image's name too: a request whose answer was lost made them.
    builders, images, snapshots = set(), set(), set(made.snapshots)
    if made.builder:
        builders.add(made.builder)
    if made.image:
        images.add(made.image)
    try:
        for page in ec2.get_paginator("describe_instances").paginate(
            Filters=build_filter + [{"Name": "instance-state-name", "Values": LIVE_BUILDER_STATES}]):
            builders.update(i["InstanceId"] for r in page["Reservations"] for i in r["Instances"])
        for filters in (build_filter, [{"Name": "name", "Values": [plan.image_name]}]):
            found = ec2.describe_images(Owners=["self"], Filters=filters)["Images"]
            images.update(i["ImageId"] for i in found)
            snapshots.update(s for i in found for s in _image_facts(i).snapshots)
        for builder in builders:
            for page in ec2.get_paginator("describe_snapshots").paginate(
                    OwnerIds=["self"], Filters=[{"Name": "description", "Values": [f"*CreateImage({builder})*"]}]):
                snapshots.update(s["SnapshotId"] for s in page["Snapshots"])
        for page in ec2.get_paginator("describe_snapshots").paginate(OwnerIds=["self"], Filters=build_filter):
            snapshots.update(s["SnapshotId"] for s in page["Snapshots"])
    except Exception as exc:
        left.append(f"whatever else build {plan.build_id} made (it could not be listed: {type(exc).__name__}; "
                    f"look for the tag {contract.TAG_IMAGE_BUILD}={plan.build_id})")
    for builder in sorted(builders):
        attempt(f"the builder {builder} (terminated)", lambda b=builder: ec2.terminate_instances(InstanceIds=[b]))
    kept: set[str] = set()
    if made.asked_default:
        for image in images:
            try:
                if _stack_names(clients, plan.stack_name, image):
                    kept.add(image)
            except Exception:
                kept.add(image)  # cannot tell: a stack's image is never removed on a guess
    for image in sorted(images - kept):
        attempt(f"the image {image}", lambda i=image: ec2.deregister_image(ImageId=i))
    if kept:
        progress(f"  kept {', '.join(sorted(kept))}: stack {plan.stack_name} already names it")
    else:
        for snapshot in sorted(snapshots):
            attempt(f"the snapshot {snapshot}", lambda s=snapshot: ec2.delete_snapshot(SnapshotId=s))
    try:
        clients.s3.delete_object(Bucket=plan.code_bucket, Key=plan.result_key)
    except Exception:
        pass
    return left
