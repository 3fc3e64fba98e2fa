"""What a setup will change, shown to the administrator before anything is changed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class ResourceChange:
    action: str  # Add, Modify, Remove (CloudFormation's words)
    logical_id: str
    resource_type: str
    replacement: str = ""  # True, False, Conditional; "" for Add and Remove


@dataclass(frozen=True)
class ChangePlan:
    creating: bool  # a new stack: every resource is added
    changes: list[ResourceChange]


# Shown the plan, raises to decline (nothing is then changed); returns to go ahead.
Approve = Callable[[ChangePlan], None]


def approve_everything(_plan: ChangePlan) -> None:
    return None


def changes_of_change_set(described: dict[str, Any]) -> list[ResourceChange]:
    found = []
    for change in described.get("Changes", []):
        rc = change.get("ResourceChange", {})
        found.append(ResourceChange(rc.get("Action", "?"), rc.get("LogicalResourceId", "?"),
                                    rc.get("ResourceType", ""), str(rc.get("Replacement", "") or "")))
    return found


def additions(template_body: str) -> list[ResourceChange]:
    """A new stack: every resource of its template is added."""
    resources = json.loads(template_body).get("Resources", {})
    return [ResourceChange("Add", name, spec.get("Type", "")) for name, spec in resources.items()]
