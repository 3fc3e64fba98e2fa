"""A project's annex instances as EC2 describes them (the broker's view; tags re-checked here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from annex_cloud.expiry import parse_expiry_tag
from annex_cloud.tags import LIVE_STATES, TAG_ANNEX_NAME, TAG_EXPIRY, TAG_IDLE, TAG_OWNER, TAG_PROJECT, tag_dict

# What status shows: live instances and those on their way out.
STATUS_STATES = (*LIVE_STATES, "shutting-down")
PAGE_SIZE = 1000


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
    lifecycle: str  # on-demand | spot

    @property
    def expiry(self) -> datetime | None:
        return parse_expiry_tag(self.expiry_tag)

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


def from_description(raw: dict[str, Any]) -> AnnexInstance:
    tags = tag_dict(raw.get("Tags"))
    launched = raw.get("LaunchTime")
    if isinstance(launched, datetime):
        launched = launched if launched.tzinfo else launched.replace(tzinfo=timezone.utc)
    else:
        launched = datetime.now(timezone.utc)
    return AnnexInstance(
        instance_id=raw["InstanceId"],
        annex_name=tags.get(TAG_ANNEX_NAME, ""),
        project_id=tags.get(TAG_PROJECT, ""),
        owner=tags.get(TAG_OWNER, ""),
        state=raw.get("State", {}).get("Name", ""),
        instance_type=raw.get("InstanceType", ""),
        zone=raw.get("Placement", {}).get("AvailabilityZone", ""),
        launch_time=launched,
        expiry_tag=tags.get(TAG_EXPIRY),
        idle_tag=tags.get(TAG_IDLE),
        lifecycle=raw.get("InstanceLifecycle") or "on-demand",
    )


def project_instances(
    ec2: Any, project_id: str, *, annex_name: str | None = None, states: Iterable[str] = LIVE_STATES
) -> list[AnnexInstance]:
    """The project's instances in ``states``; filters are re-checked on our side, because this
    list decides what is counted against caps, extended or ended."""
    wanted = tuple(states)
    filters = [
        {"Name": f"tag:{TAG_PROJECT}", "Values": [project_id]},
        {"Name": "instance-state-name", "Values": list(wanted)},
    ]
    if annex_name:
        filters.append({"Name": f"tag:{TAG_ANNEX_NAME}", "Values": [annex_name]})
    found: dict[str, AnnexInstance] = {}
    for page in ec2.get_paginator("describe_instances").paginate(
        Filters=filters, PaginationConfig={"PageSize": PAGE_SIZE}
    ):
        for reservation in page.get("Reservations", []):
            for raw in reservation.get("Instances", []):
                instance = from_description(raw)
                if (
                    instance.project_id == project_id
                    and instance.state in wanted
                    and (annex_name is None or instance.annex_name == annex_name)
                ):
                    found[instance.instance_id] = instance
    return sorted(found.values(), key=lambda i: (i.annex_name, i.launch_time, i.instance_id))
