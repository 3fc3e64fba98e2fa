"""Typed wrappers for the AWS calls condor_annex makes, named for what they do."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Iterator

from annex_common.aws import AwsClients, aws_errors
from templates import contract

LIVE_STATES = ["pending", "running", "stopping", "stopped"]
FLEET_CHUNK = 1000  # instances asked for in one CreateFleet call
TAG_BATCH = 1000


@dataclass(frozen=True)
class AnnexInstance:
    instance_id: str
    annex_name: str
    project_id: str
    owner: str
    state: str
    instance_type: str
    zone: str
    launch_time: datetime
    expiry_tag: str | None
    idle_tag: str | None


@dataclass
class FleetOutcome:
    instance_ids: list[str] = field(default_factory=list)
    placements: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (type, subnet)
    errors: list[tuple[str, str, str, str]] = field(default_factory=list)  # type, subnet, code, message
    retried: bool = False  # the SDK sent the request more than once (an answer may have been lost)


def _instance(raw: dict[str, Any]) -> AnnexInstance:
    tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
    return AnnexInstance(
        instance_id=raw["InstanceId"],
        annex_name=tags.get(contract.TAG_ANNEX_NAME, ""),
        project_id=tags.get(contract.TAG_PROJECT, ""),
        owner=tags.get(contract.TAG_OWNER, ""),
        state=raw["State"]["Name"],
        instance_type=raw["InstanceType"],
        zone=raw.get("Placement", {}).get("AvailabilityZone", ""),
        launch_time=raw["LaunchTime"],
        expiry_tag=tags.get(contract.TAG_EXPIRY),
        idle_tag=tags.get(contract.TAG_IDLE),
    )


def list_annex_instances(
    clients: AwsClients, *, project_id: str, annex_name: str | None = None, states: list[str] | None = None
) -> list[AnnexInstance]:
    filters = [
        {"Name": f"tag:{contract.TAG_PROJECT}", "Values": [project_id]},
        {"Name": "instance-state-name", "Values": states or LIVE_STATES},
    ]
    if annex_name:
        filters.append({"Name": f"tag:{contract.TAG_ANNEX_NAME}", "Values": [annex_name]})
    found: list[AnnexInstance] = []
    with aws_errors("could not list the project's instances"):
        paginator = clients.ec2.get_paginator("describe_instances")
        for page in paginator.paginate(Filters=filters, PaginationConfig={"PageSize": 1000}):
            for reservation in page["Reservations"]:
                found.extend(_instance(raw) for raw in reservation["Instances"])
    # Server-side filters are re-checked here: this list decides what gets extended or ended.
    return [i for i in found if i.project_id == project_id and (annex_name is None or i.annex_name == annex_name)]


def launch_fleet(
    clients: AwsClients,
    *,
    count: int,
    launch_templates: dict[str, str],
    pools: list[tuple[str, str]],
    tags: dict[str, str],
    spot: bool,
) -> FleetOutcome:
    """One instant CreateFleet over the given (type, subnet) pools; capacity errors are returned."""
    overrides_by_template = [
        {
            "LaunchTemplateSpecification": {"LaunchTemplateId": lt_id, "Version": "$Default"},
            "Overrides": [
                {"InstanceType": itype, "SubnetId": subnet, "Priority": float(rank)}
                for rank, (pool_type, subnet) in enumerate(pools)
                if pool_type == itype
            ],
        }
        for itype, lt_id in launch_templates.items()
        if any(pool_type == itype for pool_type, _ in pools)
    ]
    request: dict[str, Any] = {
        "Type": "instant",
        "ClientToken": uuid.uuid4().hex,
        "LaunchTemplateConfigs": overrides_by_template,
        "TargetCapacitySpecification": {
            "TotalTargetCapacity": count,
            "DefaultTargetCapacityType": "spot" if spot else "on-demand",
            ("SpotTargetCapacity" if spot else "OnDemandTargetCapacity"): count,
        },
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ],
    }
    if spot:
        request["SpotOptions"] = {"AllocationStrategy": "price-capacity-optimized"}
    else:
        request["OnDemandOptions"] = {"AllocationStrategy": "lowest-price"}
    with aws_errors("the fleet request failed"):
        response = clients.ec2.create_fleet(**request)
    outcome = FleetOutcome(retried=response.get("ResponseMetadata", {}).get("RetryAttempts", 0) > 0)
    for group in response.get("Instances", []):
        chosen = group.get("LaunchTemplateAndOverrides", {}).get("Overrides", {})
        for instance_id in group.get("InstanceIds", []):
            outcome.instance_ids.append(instance_id)
            outcome.placements[instance_id] = (
                chosen.get("InstanceType", group.get("InstanceType", "")),
                chosen.get("SubnetId", ""),
            )
    for error in response.get("Errors", []):
        chosen = error.get("LaunchTemplateAndOverrides", {}).get("Overrides", {})
        outcome.errors.append(
            (chosen.get("InstanceType", ""), chosen.get("SubnetId", ""), error.get("ErrorCode", ""),
             error.get("ErrorMessage", ""))
        )
    return outcome


def check_launch_permission(clients: AwsClients, *, launch_template: str, subnet: str, tags: dict[str, str]) -> str:
    """EC2 DryRun of the launch: 'allowed' or the refusal, spending nothing."""
    import botocore.exceptions

    try:
        clients.ec2.run_instances(
            DryRun=True,
            MinCount=1,
            MaxCount=1,
            LaunchTemplate={"LaunchTemplateId": launch_template, "Version": "$Default"},
            SubnetId=subnet,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
        )
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "DryRunOperation":
            return "allowed"
        return f"refused ({code})"
    return "allowed (the endpoint does not implement DryRun)"


def set_expiry_tags(clients: AwsClients, instance_ids: list[str], expiry_tag: str) -> None:
    with aws_errors("could not move the lease end", "Run the same extend command again."):
        for batch in chunks(instance_ids, TAG_BATCH):
            clients.ec2.create_tags(Resources=batch, Tags=[{"Key": contract.TAG_EXPIRY, "Value": expiry_tag}])


def terminate_instances(clients: AwsClients, instance_ids: list[str]) -> None:
    with aws_errors("could not terminate the annex", "Run the same terminate command again."):
        for batch in chunks(instance_ids, TAG_BATCH):
            clients.ec2.terminate_instances(InstanceIds=batch)


def put_annex_objects(clients: AwsClients, *, bucket: str, prefix: str, objects: dict[str, bytes]) -> None:
    with aws_errors("could not upload the annex configuration"):
        for name, body in objects.items():
            clients.s3.put_object(Bucket=bucket, Key=prefix + name, Body=body, ServerSideEncryption="AES256")


def delete_annex_objects(clients: AwsClients, *, bucket: str, prefix: str) -> int:
    deleted = 0
    with aws_errors("could not remove the annex configuration"):
        paginator = clients.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                clients.s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
                deleted += len(keys)
    return deleted


def chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def count_by(items: Iterable[AnnexInstance], attribute: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        key = getattr(item, attribute)
        counts[key] = counts.get(key, 0) + 1
    return counts
