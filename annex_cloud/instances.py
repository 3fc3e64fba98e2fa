"""The one model of an annex instance, for the broker, the enforcer, teardown and status.

An instance is known from EC2's description (``from_description``), or, for the minutes before
DescribeInstances lists it, from the broker's record of the launch that made it
(``from_launch_record``). Tags are re-checked here, whatever filter found the instance, because
this list decides what is counted against caps, extended or ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from annex_cloud.expiry import parse_expiry_tag
from annex_cloud.registry import LaunchedInstance
from annex_cloud.tags import LIVE_STATES, TAG_ANNEX_NAME, TAG_EXPIRY, TAG_IDLE, TAG_OWNER, TAG_PROJECT, tag_dict

PAGE_SIZE = 1000
_EARLIEST = datetime.min.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class AnnexInstance:
    instance_id: str
    annex_name: str  # "" when the instance carries no annex name tag
    project_id: str  # "" when the instance carries no project tag
    state: str
    instance_type: str
    launch_time: datetime | None
    expiry_tag: str | None  # the tag's value, None when the tag is absent
    owner: str = ""
    zone: str = ""
    idle_tag: str | None = None
    lifecycle: str = "on-demand"  # on-demand | spot
    tag_problem: str | None = None  # why its tags give it no valid lease whatever their values

    @property
    def expiry(self) -> datetime | None:
        return parse_expiry_tag(self.expiry_tag)

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def age_key(self) -> tuple[datetime, str]:
        """Sort key, oldest first; instances launched in the same second are ordered by id."""
        return (self.launch_time or _EARLIEST, self.instance_id)


def as_utc(value: Any) -> datetime | None:
    """An aware UTC datetime from a datetime (naive ones are UTC) or ISO 8601 text; else None."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    if isinstance(value, str):
        try:
            return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def from_description(raw: Mapping[str, Any]) -> AnnexInstance:
    """The instance as one entry of DescribeInstances' ``Reservations[].Instances[]`` shows it."""
    tags = tag_dict(raw.get("Tags"))
    return AnnexInstance(
        instance_id=str(raw["InstanceId"]),
        annex_name=tags.get(TAG_ANNEX_NAME, ""),
        project_id=tags.get(TAG_PROJECT, ""),
        state=(raw.get("State") or {}).get("Name", ""),
        instance_type=raw.get("InstanceType", ""),
        launch_time=as_utc(raw.get("LaunchTime")),
        expiry_tag=tags.get(TAG_EXPIRY),
        owner=tags.get(TAG_OWNER, ""),
        zone=(raw.get("Placement") or {}).get("AvailabilityZone", ""),
        idle_tag=tags.get(TAG_IDLE),
        lifecycle=raw.get("InstanceLifecycle") or "on-demand",
    )


def from_launch_record(project_id: str, record: LaunchedInstance) -> AnnexInstance:
    """An instance the broker launched that DescribeInstances may not list yet (it is eventually
    consistent): as its launch recorded it, pending since the launch."""
    return AnnexInstance(
        instance_id=record.instance_id,
        annex_name=record.annex_name,
        project_id=project_id,
        state="pending",
        instance_type=record.instance_type,
        launch_time=datetime.fromtimestamp(record.launched_at, timezone.utc),
        expiry_tag=record.expiry,
    )


def describe(ec2: Any, filters: list[dict[str, Any]]) -> Iterable[Mapping[str, Any]]:
    """Every instance DescribeInstances lists for ``filters``, page by page."""
    for page in ec2.get_paginator("describe_instances").paginate(
        Filters=filters, PaginationConfig={"PageSize": PAGE_SIZE}
    ):
        for reservation in page.get("Reservations", []):
            yield from reservation.get("Instances", [])


def project_instances(
    ec2: Any, project_id: str, *, annex_name: str | None = None, states: Iterable[str] = LIVE_STATES
) -> list[AnnexInstance]:
    """The project's instances in ``states`` (of one annex, when named), as EC2 lists them."""
    wanted = tuple(states)
    filters = [
        {"Name": f"tag:{TAG_PROJECT}", "Values": [project_id]},
        {"Name": "instance-state-name", "Values": list(wanted)},
    ]
    if annex_name:
        filters.append({"Name": f"tag:{TAG_ANNEX_NAME}", "Values": [annex_name]})
    found: dict[str, AnnexInstance] = {}
    for raw in describe(ec2, filters):
        instance = from_description(raw)
        if (
            instance.project_id == project_id
            and instance.state in wanted
            and (annex_name is None or instance.annex_name == annex_name)
        ):
            found[instance.instance_id] = instance
    return sorted(found.values(), key=lambda i: (i.annex_name, i.age_key))

