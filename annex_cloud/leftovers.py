"""What an annex can leave behind that still costs money, and how it is removed.

- **Fleets** of type ``maintain`` or ``request`` made from the stack's launch templates: they
  replace every instance the enforcer ends. The broker only makes ``instant`` fleets, which
  launch once and are never touched here (deleting an instant fleet terminates its instances).
  A fleet is deleted without its instances; those are judged by the lease rules like any other.
- **Spot requests** of annexes (tagged with the annex name or the stack, or whose instance is an
  annex instance): a ``persistent`` one relaunches its instance after every termination, an
  ``open`` one may launch an instance at any later time. An active one-time request is left
  alone: it launches nothing more, and its instance is judged by the lease rules. (The launch
  templates cannot tag spot requests: EC2 then refuses every on-demand launch from them.)
- **Volumes** of the stack (tagged by the launch templates, or with the annex name) left
  ``available`` after their instance ended.

Each is left alone for a grace period after it was made (a launch may be using it right now).
Nothing here touches an instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Collection, Iterable, Mapping

from annex_cloud.calls import error_text
from annex_cloud.nodes import node_role_name
from annex_cloud.tags import TAG_ANNEX_NAME, TAG_STACK, tag_dict

FLEET = "fleet"
SPOT_REQUEST = "spot request"
VOLUME = "volume"

# Fleet states in which a fleet can still launch instances.
FLEET_LIVE_STATES = ("submitted", "active", "modifying")
FLEET_LASTING_TYPES = ("maintain", "request")
SPOT_LIVE_STATES = ("open", "active", "disabled")
# DeleteFleets takes at most 100 maintain or request fleets; CancelSpotInstanceRequests is
# batched the same way to keep one failed call small.
REMOVE_BATCH = 100


@dataclass(frozen=True)
class StackScope:
    """What marks the region stack's own resources, beyond the annex tags."""

    name: str
    launch_template_ids: tuple[str, ...] = ()
    launch_template_names: tuple[str, ...] = ()
    region: str = ""  # with the name, it tells each project's node profile (annex_cloud.nodes)

    @property
    def launch_templates(self) -> frozenset[str]:
        return frozenset(self.launch_template_ids) | frozenset(self.launch_template_names)

    def node_profile(self, project_id: str) -> str:
        """The name of the instance profile the project's nodes run with."""
        return node_role_name(self.name, self.region, project_id)


@dataclass(frozen=True)
class Leftover:
    kind: str  # FLEET | SPOT_REQUEST | VOLUME
    resource_id: str
    reason: str


# ---------------------------------------------------------------------------------------------
# Pure selection: describe output in, leftovers out.
# ---------------------------------------------------------------------------------------------


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def past_grace(created: Any, now: datetime, grace_seconds: int) -> bool:
    """Made at least ``grace_seconds`` ago. An age that cannot be read counts as old: a leftover
    must not survive on a missing field."""
    moment = _utc(created)
    return moment is None or moment <= now - timedelta(seconds=grace_seconds)


def _is_ours(tags: Mapping[str, str], scope: StackScope | None) -> bool:
    return TAG_ANNEX_NAME in tags or (scope is not None and tags.get(TAG_STACK) == scope.name)


def fleet_launch_templates(fleet: Mapping[str, Any]) -> set[str]:
    """Ids and names of the launch templates a fleet launches from."""
    found: set[str] = set()
    for config in fleet.get("LaunchTemplateConfigs") or []:
        spec = config.get("LaunchTemplateSpecification") or {}
        found |= {str(spec[key]) for key in ("LaunchTemplateId", "LaunchTemplateName") if spec.get(key)}
    return found


def leftover_fleets(
    fleets: Iterable[Mapping[str, Any]], scope: StackScope | None, now: datetime, grace_seconds: int
) -> list[Leftover]:
    """Lasting fleets of the stack: tagged with it (the enforcer's role may delete only those), or
    made from its templates by someone else (the deletion is then refused, and the refusal reported,
    so that the administrator hears of a fleet that would replace what the enforcer ends)."""
    if scope is None:
        return []
    found: list[Leftover] = []
    for fleet in fleets:
        kind, state = fleet.get("Type"), fleet.get("FleetState")
        if kind not in FLEET_LASTING_TYPES or state not in FLEET_LIVE_STATES or not fleet.get("FleetId"):
            continue
        if not past_grace(fleet.get("CreateTime"), now, grace_seconds):
            continue
        templates = fleet_launch_templates(fleet) & scope.launch_templates
        if tag_dict(fleet.get("Tags")).get(TAG_STACK) == scope.name:
            found.append(Leftover(FLEET, fleet["FleetId"], f"{kind} fleet tagged with stack {scope.name}"))
        elif templates:
            found.append(
                Leftover(FLEET, fleet["FleetId"], f"{kind} fleet from the stack's launch template {min(templates)}")
            )
    return found


def leftover_spot_requests(
    requests: Iterable[Mapping[str, Any]],
    scope: StackScope | None,
    now: datetime,
    grace_seconds: int,
    annex_instance_ids: Collection[str] = frozenset(),
) -> list[Leftover]:
    found: list[Leftover] = []
    for request in requests:
        request_id = request.get("SpotInstanceRequestId")
        if not request_id or request.get("State") not in SPOT_LIVE_STATES:
            continue
        ours = _is_ours(tag_dict(request.get("Tags")), scope) or request.get("InstanceId") in annex_instance_ids
        if not ours:
            continue
        if request.get("Type") == "persistent":
            reason = "persistent spot request (it relaunches its instance after every termination)"
        elif request.get("State") == "open":
            reason = "open spot request (it may launch an instance at any time)"
        else:
            continue
        if past_grace(request.get("CreateTime"), now, grace_seconds):
            found.append(Leftover(SPOT_REQUEST, request_id, reason))
    return found


def leftover_volumes(
    volumes: Iterable[Mapping[str, Any]], scope: StackScope | None, now: datetime, grace_seconds: int
) -> list[Leftover]:
    found: list[Leftover] = []
    for volume in volumes:
        volume_id = volume.get("VolumeId")
        if not volume_id or volume.get("State") != "available":
            continue
        if _is_ours(tag_dict(volume.get("Tags")), scope) and past_grace(volume.get("CreateTime"), now, grace_seconds):
            size = volume.get("Size")
            found.append(Leftover(VOLUME, volume_id, f"annex volume{f' of {size} GiB' if size else ''} left available"))
    return found


# ---------------------------------------------------------------------------------------------
# I/O: finding and removing them.
# ---------------------------------------------------------------------------------------------


def _paged(ec2: Any, operation: str, key: str, **request: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in ec2.get_paginator(operation).paginate(**request):
        items += page.get(key, [])
    return items


def _tagged_queries(scope: StackScope | None, extra: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Server-side filters for the stack's tag and the annex name tag (the selectors re-check)."""
    queries = [extra + [{"Name": "tag-key", "Values": [TAG_ANNEX_NAME]}]]
    if scope is not None:
        queries.append(extra + [{"Name": f"tag:{TAG_STACK}", "Values": [scope.name]}])
    return queries


def _unique(items: Iterable[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return list({item[key]: item for item in items if item.get(key)}.values())


def find_fleets(
    ec2: Any, scope: StackScope | None, now: datetime, grace_seconds: int, annex_instance_ids: Collection[str]
) -> list[Leftover]:
    if scope is None or not scope.launch_templates:
        return []
    # DescribeFleets filters name no launch template: the selector does that on every fleet.
    return leftover_fleets(_paged(ec2, "describe_fleets", "Fleets"), scope, now, grace_seconds)


def find_spot_requests(
    ec2: Any, scope: StackScope | None, now: datetime, grace_seconds: int, annex_instance_ids: Collection[str]
) -> list[Leftover]:
    # Every live request: the ones whose instance is an annex instance carry no tag to filter on.
    live = [{"Name": "state", "Values": list(SPOT_LIVE_STATES)}]
    requests = _paged(ec2, "describe_spot_instance_requests", "SpotInstanceRequests", Filters=live)
    return leftover_spot_requests(requests, scope, now, grace_seconds, annex_instance_ids)


def find_volumes(
    ec2: Any, scope: StackScope | None, now: datetime, grace_seconds: int, annex_instance_ids: Collection[str]
) -> list[Leftover]:
    available = [{"Name": "status", "Values": ["available"]}]
    volumes = [
        volume
        for filters in _tagged_queries(scope, available)
        for volume in _paged(ec2, "describe_volumes", "Volumes", Filters=filters)
    ]
    return leftover_volumes(_unique(volumes, "VolumeId"), scope, now, grace_seconds)


Finder = Callable[[Any, "StackScope | None", datetime, int, Collection[str]], list[Leftover]]
FINDERS: dict[str, Finder] = {FLEET: find_fleets, SPOT_REQUEST: find_spot_requests, VOLUME: find_volumes}


def find(
    ec2: Any,
    kinds: Iterable[str],
    scope: StackScope | None,
    now: datetime,
    grace_seconds: int,
    errors: list[str],
    log: Callable[[str], None],
    annex_instance_ids: Collection[str] = frozenset(),
) -> list[Leftover]:
    """Leftovers of the given kinds; a kind that cannot be listed is reported and skipped."""
    found: list[Leftover] = []
    for kind in kinds:
        try:
            found += FINDERS[kind](ec2, scope, now, grace_seconds, annex_instance_ids)
        except Exception as exc:  # botocore errors; the other kinds and the sweep go on
            message = f"could not list {kind}s: {error_text(exc)}"
            errors.append(message)
            log(f"error: {message}")
    return found


def _batches(items: list[Leftover], size: int = REMOVE_BATCH) -> Iterable[list[Leftover]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _delete_fleets(ec2: Any, batch: list[Leftover]) -> dict[str, str]:
    """Failures by fleet id. The instances stay: the lease rules decide about each of them."""
    response = ec2.delete_fleets(FleetIds=[f.resource_id for f in batch], TerminateInstances=False)
    return {
        failure.get("FleetId", ""): f"{failure.get('Error', {}).get('Code', '')}: {failure.get('Error', {}).get('Message', '')}"
        for failure in response.get("UnsuccessfulFleetDeletions", [])
    }


def _cancel_spot_requests(ec2: Any, batch: list[Leftover]) -> dict[str, str]:
    ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=[r.resource_id for r in batch])
    return {}


def _delete_volumes(ec2: Any, batch: list[Leftover]) -> dict[str, str]:
    failed: dict[str, str] = {}
    for volume in batch:  # DeleteVolume takes one volume
        try:
            ec2.delete_volume(VolumeId=volume.resource_id)
        except Exception as exc:
            failed[volume.resource_id] = error_text(exc)
    return failed


REMOVERS: dict[str, Callable[[Any, list[Leftover]], dict[str, str]]] = {
    FLEET: _delete_fleets,
    SPOT_REQUEST: _cancel_spot_requests,
    VOLUME: _delete_volumes,
}


def remove(
    ec2: Any, leftovers: list[Leftover], dry_run: bool, errors: list[str], log: Callable[[str], None]
) -> list[Leftover]:
    """Removes each leftover (a dry run only says so); returns those removed or to be removed."""
    removed: list[Leftover] = []
    for kind, remover in REMOVERS.items():
        for batch in _batches([item for item in leftovers if item.kind == kind]):
            failed: dict[str, str] = {}
            if not dry_run:
                try:
                    failed = remover(ec2, batch)
                except Exception as exc:
                    failed = {item.resource_id: error_text(exc) for item in batch}
            for item in batch:
                if item.resource_id in failed:
                    message = f"could not remove {kind} {item.resource_id}: {failed[item.resource_id]}"
                    errors.append(message)
                    log(f"error: {message}")
                    continue
                removed.append(item)
                log(f"{'would remove' if dry_run else 'removed'} {kind} {item.resource_id}: {item.reason}")
    return removed
