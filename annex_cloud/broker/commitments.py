"""What a project has committed, counted one way by every request that changes it, and the turn
each such request takes.

Launch, extend and terminate each run whole in the project's turn (its lock:
``Registry.acquire`` says why a lock, and why its lease outlives the function), and each counts
the project's instances with ``counted_instances``: EC2's list, and the instances the broker's
launch records name that EC2 does not list yet. So an extension right after a launch counts it as
a second launch would, and a terminate or extension of an annex reaches every instance the
registry knows of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from annex_cloud.calls import error_code
from annex_cloud.instances import AnnexInstance, from_launch_record, project_instances
from annex_cloud.registry import Registry
from annex_cloud.tags import LIVE_STATES

DESCRIBE_BATCH = 1000  # ids per DescribeInstances
Done = TypeVar("Done")


@dataclass(frozen=True)
class Turn:
    """The project's lock, held by one request."""

    registry: Registry
    project_id: str
    holder: str

    def lost(self) -> str | None:
        """Why the request must stop changing the project now (another request took its lock),
        or None, having renewed the lease. Checked before each further fleet round."""
        if self.registry.renew(self.project_id, self.holder):
            return None
        return "the project's lock passed to another request before the launch was done"


def in_turn(registry: Registry, project_id: str, work: Callable[[Turn], Done]) -> Done:
    """Run ``work`` holding the project's lock: the project's changing requests take turns."""
    turn = Turn(registry, project_id, registry.acquire(project_id))
    try:
        return work(turn)
    finally:
        registry.release(project_id, turn.holder)


def counted_instances(ec2: Any, registry: Registry, project_id: str) -> list[AnnexInstance]:
    """The project's live instances: EC2's list, plus those its recent launches recorded that
    DescribeInstances does not show yet (it is eventually consistent) and that have not ended."""
    counted = {i.instance_id: i for i in project_instances(ec2, project_id)}
    unseen = [r for r in registry.recent_launches(project_id) if r.instance_id not in counted]
    gone = _ended_ids(ec2, [r.instance_id for r in unseen])
    for record in unseen:
        if record.instance_id not in gone:
            counted[record.instance_id] = from_launch_record(project_id, record)
    return sorted(counted.values(), key=lambda i: (i.annex_name, i.age_key))


def _ended_ids(ec2: Any, ids: list[str]) -> set[str]:
    ended: set[str] = set()
    for start in range(0, len(ids), DESCRIBE_BATCH):
        try:
            pages = ec2.get_paginator("describe_instances").paginate(InstanceIds=ids[start : start + DESCRIBE_BATCH])
            for page in pages:
                for reservation in page.get("Reservations", []):
                    for raw in reservation.get("Instances", []):
                        if raw.get("State", {}).get("Name") not in LIVE_STATES:
                            ended.add(raw["InstanceId"])
        except Exception as exc:  # not visible yet: count them, as the safe side
            if not error_code(exc).startswith("InvalidInstanceID"):
                raise
    return ended
