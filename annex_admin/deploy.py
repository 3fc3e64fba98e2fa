"""Region setup: resolve settings against the region, then create or update the stack and wait."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import botocore.exceptions

from annex_admin.artifact import build_function_zip
from annex_admin.prices import PricePlan, plan_prices, store_price_plan, unpriced_types
from annex_cloud.cost import PriceBook
from annex_cloud.registry import Registry
from annex_admin.concurrency import ConcurrencyPlan, account_concurrency, plan_concurrency, reserved_of
from annex_admin.changes import Approve, ChangePlan, additions, approve_everything, changes_of_change_set
from annex_common.aws import AwsClients, aws_errors, error_code
from annex_common.errors import AwsFailure, BadInput, NotReady
from annex_common.regions import validate_region
from annex_admin.stack import describe_stack, recovery_advice
from templates import contract
from templates.node_bootstrap import bootstrap_artifact
from templates.settings import StackSettings
from templates.stack import ALARM_EMAIL_RESOURCE, template_json

Progress = Callable[[str], None]
CAPABILITIES = ["CAPABILITY_NAMED_IAM"]
POLL_SECONDS = 2.0
WAIT_LIMIT_SECONDS = 3600


@dataclass
class DeployResult:
    action: str  # created | updated | unchanged
    status: str
    outputs: dict[str, str] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    prices: PriceBook | None = None
    projects_followed: list[str] = field(default_factory=list)  # got versions of changed templates


def check_instance_types(clients: AwsClients, types: tuple[str, ...]) -> None:
    try:
        clients.ec2.describe_instance_types(InstanceTypes=list(types))
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "InvalidInstanceType":
            raise BadInput(
                "unknown instance type in --instance-types",
                exc.response["Error"].get("Message", ""),
                "Use instance types EC2 offers in this region.",
            ) from exc
        with aws_errors("could not check the instance types"):
            raise


def choose_zones(clients: AwsClients, types: tuple[str, ...]) -> tuple[str, ...]:
    """Zones that offer every allowed type, most first; at least two are needed for fallback."""
    with aws_errors("could not list the region's availability zones"):
        zones = [
            z["ZoneName"]
            for z in clients.ec2.describe_availability_zones(
                Filters=[{"Name": "state", "Values": ["available"]}]
            )["AvailabilityZones"]
            if z.get("ZoneType", "availability-zone") == "availability-zone"
        ]
        offered: dict[str, set[str]] = {}
        paginator = clients.ec2.get_paginator("describe_instance_type_offerings")
        for page in paginator.paginate(
            LocationType="availability-zone",
            Filters=[{"Name": "instance-type", "Values": list(types)}],
        ):
            for offer in page["InstanceTypeOfferings"]:
                offered.setdefault(offer["Location"], set()).add(offer["InstanceType"])
    ranked = sorted(zones, key=lambda z: (-len(offered.get(z, ())), z))
    chosen = [z for z in ranked if offered.get(z)][: contract.MAX_AVAILABILITY_ZONES]
    if len(chosen) < contract.MIN_AVAILABILITY_ZONES:
        raise BadInput(
            "too few availability zones offer these instance types",
            f"found {len(chosen)}; an annex needs at least {contract.MIN_AVAILABILITY_ZONES} "
            "to fall back between zones",
            "Choose more common instance types with --instance-types.",
        )
    return tuple(sorted(chosen))


def latest_image(clients: AwsClients) -> str:
    with aws_errors(
        "could not find the latest Amazon Linux 2023 image",
        "Pass --image-id with an AMI of your choice.",
    ):
        return clients.ssm.get_parameter(Name=contract.DEFAULT_IMAGE_PARAMETER)["Parameter"]["Value"]


def current_notify_email(clients: AwsClients, stack_name: str) -> str | None:
    """The address the stack's template subscribes to the enforcer's alarms, or None."""
    if describe_stack(clients, stack_name) is None:
        return None
    with aws_errors(f"could not read the template of stack {stack_name}"):
        body = clients.cloudformation.get_template(StackName=stack_name)["TemplateBody"]
    document = body if isinstance(body, dict) else json.loads(body)
    resource = (document.get("Resources") or {}).get(ALARM_EMAIL_RESOURCE) or {}
    endpoint = (resource.get("Properties") or {}).get("Endpoint")
    return endpoint if isinstance(endpoint, str) and endpoint else None


def stack_concurrency(clients: AwsClients, stack_name: str) -> ConcurrencyPlan:
    """The reservations this account allows the stack (its own current ones given back first)."""
    stack = describe_stack(clients, stack_name)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in (stack or {}).get("Outputs", [])}
    functions = [outputs[k] for k in (contract.OUT_BROKER_FUNCTION, contract.OUT_ENFORCER_FUNCTION) if outputs.get(k)]
    limit, unreserved = account_concurrency(clients)
    return plan_concurrency(limit, unreserved, reserved_of(clients, functions))


def resolve_settings(clients: AwsClients, request: StackSettings) -> tuple[StackSettings, ConcurrencyPlan]:
    """The administrator's settings, completed from the region: zones, image and prices, the
    alarm address the stack already has when none is given (so a later setup keeps it; 'none'
    removes it), and the
    Lambda concurrency the account can reserve (with a note of what it cannot)."""
    validate_region(request.region)
    check_instance_types(clients, request.instance_types)
    concurrency = stack_concurrency(clients, request.stack_name)
    return dataclasses.replace(
        request,
        availability_zones=choose_zones(clients, request.instance_types),
        image_id=request.image_id or latest_image(clients),
        image_chosen_by_setup=True if not request.image_id else request.image_chosen_by_setup,
        code_key=build_function_zip().key,
        notify_email=(request.notify_email if request.notify_email is not None
                      else current_notify_email(clients, request.stack_name)),
        enforcer_concurrency=concurrency.enforcer,
        broker_concurrency=concurrency.broker,
    ), concurrency


def account_id(clients: AwsClients) -> str:
    with aws_errors("could not tell which AWS account these credentials belong to"):
        return clients.client("sts").get_caller_identity()["Account"]


def publish_code(clients: AwsClients, settings: StackSettings, progress: Progress) -> str:
    """Put the functions' zip where the stack's functions load it from, and the node bootstrap
    where the launch templates' loader fetches it; returns the bucket.

    The bucket must exist before the stack (the functions are created from it), so setup makes
    it, private and encrypted, and teardown removes it. Both objects are content-addressed; an
    unchanged one is not uploaded again.
    """
    artifact = build_function_zip()
    if artifact.key != settings.code_key:
        raise AwsFailure("the functions' code changed while setup ran", "the zip's key no longer matches", "Run setup again.")
    bucket = contract.artifact_bucket_name(settings.stack_name, account_id(clients), settings.region)
    s3 = clients.s3
    with aws_errors(f"could not prepare the code bucket {bucket}"):
        try:
            s3.head_bucket(Bucket=bucket)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise
            progress(f"Creating the code bucket {bucket}")
            create: dict[str, Any] = {"Bucket": bucket}
            if settings.region != "us-east-1":
                create["CreateBucketConfiguration"] = {"LocationConstraint": settings.region}
            s3.create_bucket(**create)
            s3.put_public_access_block(
                Bucket=bucket,
                PublicAccessBlockConfiguration={
                    "BlockPublicAcls": True, "IgnorePublicAcls": True,
                    "BlockPublicPolicy": True, "RestrictPublicBuckets": True,
                },
            )
            s3.put_bucket_tagging(
                Bucket=bucket, Tagging={"TagSet": [{"Key": contract.TAG_STACK, "Value": settings.stack_name}]}
            )
        bootstrap = bootstrap_artifact()
        for key, body, what in (
            (artifact.key, artifact.body, "the functions' code"),
            (bootstrap.key, bootstrap.body, "the node bootstrap"),
        ):
            _upload_once(s3, bucket, key, body, what, progress)
    return bucket


def _upload_once(s3: Any, bucket: str, key: str, body: bytes, what: str, progress: Progress) -> None:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
            raise
        progress(f"Uploading {what} ({max(len(body) // 1024, 1)} KiB) as {key}")
        s3.put_object(Bucket=bucket, Key=key, Body=body, ServerSideEncryption="AES256")


def price_plan(clients: AwsClients, settings: StackSettings) -> PricePlan:
    """The prices the stack will keep for its types (the stored ones while fresh); BadInput naming
    the types no source prices, before anything is changed."""
    stored = None
    stack = describe_stack(clients, settings.stack_name)
    table = {o["OutputKey"]: o["OutputValue"] for o in (stack or {}).get("Outputs", [])}.get(contract.OUT_REGISTRY_TABLE)
    types = list(settings.instance_types)
    with aws_errors("could not read the region's prices"):
        if table:
            stored = Registry(clients.client("dynamodb"), table).prices()
        plan = plan_prices(clients, stored, settings.region, types, datetime.now(timezone.utc))
    refusal = unpriced_types(plan, settings.region, types)
    if refusal is not None:
        raise refusal
    return plan


def store_prices(clients: AwsClients, settings: StackSettings, outputs: dict[str, str], plan: PricePlan,
                 progress: Progress) -> PriceBook:
    """Store the planned prices where the broker and enforcer read them."""
    table = outputs.get(contract.OUT_REGISTRY_TABLE)
    if not table:
        raise NotReady(f"stack {settings.stack_name} has no registry table output", "", "Run setup again.")
    with aws_errors("could not store the region's prices"):
        book = store_price_plan(Registry(clients.client("dynamodb"), table), plan)
    progress(f"Prices: {book.explained}")
    return book


def deploy(
    clients: AwsClients, settings: StackSettings, progress: Progress, approve: Approve = approve_everything
) -> DeployResult:
    """Create or update the stack, then store the region's prices with it.

    The prices are read (and fetched when due) first: a type no source prices is refused before
    anything changes. ``approve`` sees the changes then and may decline them; the functions' code
    is uploaded only once they are approved, so a declined setup changes nothing."""

    def approve_then_publish(plan: ChangePlan) -> None:
        approve(plan)
        publish_code(clients, settings, progress)

    prices = price_plan(clients, settings)
    result = _deploy_stack(clients, settings, progress, approve_then_publish)
    promote_template_versions(clients, settings.stack_name, progress)
    result.prices = store_prices(clients, settings, result.outputs, prices, progress)
    result.projects_followed = follow_node_templates(clients, settings, result.outputs, progress)
    return result


def promote_template_versions(clients: AwsClients, stack_name: str, progress: Progress) -> list[str]:
    """Make the stack's newest version of each of its launch templates the default.

    CloudFormation updates an ``AWS::EC2::LaunchTemplate`` by making a new version, and leaves
    the template's default version where it was (the resource cannot set it), so without this a
    new image or bootstrap would reach neither ``$Default`` nor, through it, the projects'
    versions. The stack's versions are those that name no instance profile: each project's
    version (``annex_admin.nodes``) names its own. The templates are the stack's resources as
    CloudFormation lists them now (its outputs may lag a change set). Returns the templates whose
    default moved."""
    from annex_admin.leftovers import stack_resources
    from annex_admin.nodes import default_versions

    moved = []
    resources = [r for r in stack_resources(clients, stack_name) if r.resource_type == "AWS::EC2::LaunchTemplate"]
    templates = [r.physical_id for r in resources]
    # A template deleted outside CloudFormation is named in words (NotReady), not as EC2's error,
    # by its instance type where the stack's outputs name it.
    stack = describe_stack(clients, stack_name) or {}
    listed = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}.get(contract.OUT_LAUNCH_TEMPLATES, "")
    types = {tid: itype for itype, tid in (pair.split("=", 1) for pair in listed.split(",") if "=" in pair)}
    default_versions(clients.ec2, {types.get(r.physical_id, r.logical_id): r.physical_id for r in resources}, stack_name)
    with aws_errors("could not make the stack's new launch template versions the default"):
        for template_id in templates:
            default, newest = 0, 0
            for page in clients.ec2.get_paginator("describe_launch_template_versions").paginate(
                LaunchTemplateId=template_id
            ):
                for version in page["LaunchTemplateVersions"]:
                    number = int(version["VersionNumber"])
                    if version.get("DefaultVersion"):
                        default = number
                    if "IamInstanceProfile" not in version.get("LaunchTemplateData", {}):
                        newest = max(newest, number)
            if newest > default:
                clients.ec2.modify_launch_template(LaunchTemplateId=template_id, DefaultVersion=str(newest))
                progress(f"Launch template {template_id}: version {newest} (the stack's newest) is now the default")
                moved.append(template_id)
    return moved


def follow_node_templates(
    clients: AwsClients, settings: StackSettings, outputs: dict[str, str], progress: Progress
) -> list[str]:
    """Each project launches from its own version of the stack's templates: after a change to
    the templates, every project gets versions of the new ones (annex_admin.nodes)."""
    from annex_admin.nodes import NodeScope, follow_templates

    registry = Registry(clients.client("dynamodb"), outputs[contract.OUT_REGISTRY_TABLE])
    followed = follow_templates(clients, NodeScope.of(settings.stack_name, settings.region, outputs), registry)
    if followed:
        progress(f"Launch template versions brought up to date for project(s) {', '.join(followed)}")
    return followed


def _deploy_stack(clients: AwsClients, settings: StackSettings, progress: Progress, approve: Approve) -> DeployResult:
    body = template_json(settings)
    existing = describe_stack(clients, settings.stack_name)
    if existing is None:
        approve(ChangePlan(creating=True, changes=additions(body)))
        return _create(clients, settings.stack_name, body, progress)
    status = existing["StackStatus"]
    if status in ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED", "CREATE_FAILED") or status.endswith(
        "_IN_PROGRESS"
    ):
        raise NotReady(
            f"stack {settings.stack_name} is in state {status} and cannot be updated",
            existing.get("StackStatusReason") or "its last operation did not complete",
            recovery_advice(status),
        )
    return _update(clients, existing, body, progress, approve)


def _create(clients: AwsClients, name: str, body: str, progress: Progress) -> DeployResult:
    progress(f"Creating stack {name}")
    with aws_errors(f"could not create stack {name}"):
        clients.cloudformation.create_stack(
            StackName=name,
            TemplateBody=body,
            Capabilities=CAPABILITIES,
            OnFailure="ROLLBACK",
            Tags=[{"Key": contract.TAG_STACK, "Value": name}],
        )
    return _finish(clients, name, "created", progress, earlier=set())


def _update(
    clients: AwsClients, existing: dict[str, Any], body: str, progress: Progress, approve: Approve
) -> DeployResult:
    name = existing["StackName"]
    change_set = f"annex-setup-{uuid.uuid4().hex[:12]}"
    progress(f"Computing changes to stack {name}")
    with aws_errors(f"could not plan an update of stack {name}"):
        clients.cloudformation.create_change_set(
            StackName=name,
            ChangeSetName=change_set,
            TemplateBody=body,
            Capabilities=CAPABILITIES,
            ChangeSetType="UPDATE",
        )
        described = _wait_change_set(clients, name, change_set)
    if described["Status"] == "FAILED":
        reason = described.get("StatusReason", "")
        with aws_errors("could not clean up an empty change set"):
            clients.cloudformation.delete_change_set(StackName=name, ChangeSetName=change_set)
        if "didn't contain changes" in reason or "No updates" in reason:
            return DeployResult("unchanged", existing["StackStatus"], _outputs_of(existing))
        raise AwsFailure(f"could not plan an update of stack {name}", reason)
    try:
        approve(ChangePlan(creating=False, changes=changes_of_change_set(described)))
    except BaseException:
        # Declined (or interrupted at the question): the change set goes, nothing changed.
        with aws_errors(f"could not delete the declined change set of stack {name}"):
            clients.cloudformation.delete_change_set(StackName=name, ChangeSetName=change_set)
        raise
    progress(f"Updating stack {name}")
    with aws_errors(f"could not update stack {name}"):
        earlier = {e["EventId"] for e in clients.cloudformation.describe_stack_events(StackName=name)["StackEvents"]}
        clients.cloudformation.execute_change_set(StackName=name, ChangeSetName=change_set)
    return _finish(clients, name, "updated", progress, earlier)


def _finish(clients: AwsClients, name: str, action: str, progress: Progress, earlier: set[str]) -> DeployResult:
    """Wait for the operation, then succeed with the stack's outputs or say how to recover."""
    final, events = _wait(clients, name, progress, earlier)
    status = final["StackStatus"]
    if status not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        raise AwsFailure(
            f"stack {name} was not {action} (state {status})",
            events[-1] if events else "see the stack's events",
            recovery_advice(status),
        )
    return DeployResult(action, status, _outputs_of(final), events)


def _wait_change_set(clients: AwsClients, name: str, change_set: str) -> dict[str, Any]:
    deadline = time.monotonic() + 600
    while True:
        described = clients.cloudformation.describe_change_set(StackName=name, ChangeSetName=change_set)
        if described["Status"] in ("CREATE_COMPLETE", "FAILED"):
            return described
        if time.monotonic() > deadline:
            raise AwsFailure(f"change set for {name} did not finish", "waited 10 minutes")
        time.sleep(POLL_SECONDS / 2)


def _wait(
    clients: AwsClients, name: str, progress: Progress, earlier: set[str]
) -> tuple[dict[str, Any], list[str]]:
    """Poll the stack, reporting each new event, until the operation leaves *_IN_PROGRESS.

    Returns the stack's final description. Events come newest first, so the first page (no
    paginator) always holds those of the running operation."""
    seen = set(earlier)
    lines: list[str] = []
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS
    while True:
        with aws_errors(f"lost track of stack {name}"):
            events = clients.cloudformation.describe_stack_events(StackName=name)["StackEvents"]
            stack = clients.cloudformation.describe_stacks(StackName=name)["Stacks"][0]
        for event in reversed(events):
            if event["EventId"] in seen:
                continue
            seen.add(event["EventId"])
            line = f"{event['ResourceStatus']:<22} {event['LogicalResourceId']}"
            if event.get("ResourceStatusReason"):
                line += f": {event['ResourceStatusReason']}"
            lines.append(line)
            progress(line)
        if not stack["StackStatus"].endswith("_IN_PROGRESS"):
            return stack, lines
        if time.monotonic() > deadline:
            raise AwsFailure(f"stack {name} is still {stack['StackStatus']}", "waited an hour")
        time.sleep(POLL_SECONDS)


def _outputs_of(stack: dict[str, Any]) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
