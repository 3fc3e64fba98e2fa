"""The tag contract: every annex instance carries these from creation (DESIGN.md, "Tags")."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

TAG_ANNEX_NAME = "htcondor:AnnexName"  # HTCondor's own key, so its tooling finds the instance
TAG_PROJECT = "htcondor:annex:project"
TAG_EXPIRY = "htcondor:annex:expiry"
TAG_IDLE = "htcondor:annex:idle"
TAG_OWNER = "htcondor:annex:owner"
REQUIRED_INSTANCE_TAGS = (TAG_ANNEX_NAME, TAG_PROJECT, TAG_EXPIRY, TAG_IDLE, TAG_OWNER)

# Every resource the region stack makes carries the stack's name under this key.
TAG_STACK = "htcondor:annex:stack"

# States in which an instance can still cost money and count against a project's caps.
LIVE_STATES = ("pending", "running", "stopping", "stopped")
# Live, or on its way out: what status shows, and what teardown waits for.
STATUS_STATES = (*LIVE_STATES, "shutting-down")


def tag_dict(tags: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    """EC2's [{"Key": k, "Value": v}] as a dict (a missing Value reads as "")."""
    return {str(t.get("Key")): str(t.get("Value", "")) for t in tags or [] if t.get("Key") is not None}


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in tags.items()]
