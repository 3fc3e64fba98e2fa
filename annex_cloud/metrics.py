"""The enforcer's CloudWatch metrics: what every run publishes, and the names the alarms and
``annex-admin check-setup`` read back.

Every metric has one dimension, the stack's name, so two stacks in one account never mix. A
completed sweep publishes ``Heartbeat`` = 1 together with its counts; a check of one instance
(the state-change path) publishes its counts only, so the heartbeat measures the schedule alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

NAMESPACE = "CondorAnnex"
DIMENSION = "StackName"

HEARTBEAT = "Heartbeat"  # 1 per completed sweep
ENDED = "Ended"  # instances terminated
COULD_NOT_END = "CouldNotEnd"  # instances condemned but still alive after every attempt
ERRORS = "Errors"  # failed calls and unreadable inputs, including a sweep that could not run

SWEEP_METRICS = (HEARTBEAT, ENDED, COULD_NOT_END, ERRORS)


def dimensions(stack_name: str) -> list[dict[str, str]]:
    return [{"Name": DIMENSION, "Value": stack_name}]


def metric_data(stack_name: str, counts: Mapping[str, float], now: datetime) -> list[dict[str, Any]]:
    """PutMetricData entries, one per count, all stamped with the run's own clock."""
    unknown = set(counts) - set(SWEEP_METRICS)
    if unknown:
        raise ValueError(f"not an enforcer metric: {sorted(unknown)}")
    return [
        {
            "MetricName": name,
            "Dimensions": dimensions(stack_name),
            "Timestamp": now,
            "Value": float(value),
            "Unit": "Count",
        }
        for name, value in counts.items()
    ]


def publish(cloudwatch: Any, stack_name: str, counts: Mapping[str, float], now: datetime) -> None:
    """One PutMetricData call (at most 1,000 entries; we send four)."""
    cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=metric_data(stack_name, counts, now))
