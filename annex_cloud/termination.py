"""The one way annex instances are ended: by the broker (terminate, duplicates of a retried
fleet), by the enforcer and by teardown.

EC2 refuses a whole TerminateInstances call for one protected instance (on AWS, every listed
instance in that instance's zone), so a refused batch is retried one instance at a time, and an
instance refused for its termination protection has it cleared and is ended: one instance that
cannot be ended never keeps the others alive. Callers pass annex instances only; a role that may
not clear protection (the broker's) gets that instance back as not ended, for the enforcer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from annex_cloud.calls import error_code, error_text

# TerminateInstances takes at most 1,000 ids; half that keeps one refused batch small.
TERMINATE_BATCH = 500

Log = Callable[[str], None]


@dataclass
class Ending:
    ended: list[str] = field(default_factory=list)  # ending now (shutting-down or gone)
    could_not_end: dict[str, str] = field(default_factory=dict)  # id -> why, after every attempt


def end_instances(ec2: Any, ids: Sequence[str], log: Log = lambda _line: None) -> Ending:
    """Terminate ``ids`` in batches; what ended and what could not, with the reason."""
    outcome = Ending()
    for start in range(0, len(ids), TERMINATE_BATCH):
        batch = list(ids[start : start + TERMINATE_BATCH])
        if len(batch) > 1:
            try:
                ec2.terminate_instances(InstanceIds=batch)
                outcome.ended += batch
                continue
            except Exception as exc:
                log(f"terminating {len(batch)} instances in one call failed ({error_text(exc)}); ending each on its own")
        for instance_id in batch:
            problem = end_instance(ec2, instance_id, log)
            if problem is None:
                outcome.ended.append(instance_id)
            else:
                outcome.could_not_end[instance_id] = problem
    return outcome


def end_instance(ec2: Any, instance_id: str, log: Log) -> str | None:
    """Terminate one instance, clearing its termination protection when that is what refuses it.
    None once it is ending, else why it could not be ended."""
    try:
        ec2.terminate_instances(InstanceIds=[instance_id])
        return None
    except Exception as exc:
        if error_code(exc) != "OperationNotPermitted":
            return error_text(exc)
    try:
        ec2.modify_instance_attribute(InstanceId=instance_id, DisableApiTermination={"Value": False})
        log(f"cleared the termination protection of {instance_id}")
        ec2.terminate_instances(InstanceIds=[instance_id])
    except Exception as exc:
        return error_text(exc)
    return None
