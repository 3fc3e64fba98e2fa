"""Each project's nodes act as that project's own IAM role, which reads that project's annex
material and nothing of any other project's.

``annex-admin issue-credentials`` makes the role, its instance profile and, for each of the stack's
launch templates, a version that differs from the template's default only by that profile; the
administrator's record keeps them (``annex_cloud.registry.NodeRecord``). The broker launches a
project's annexes from the project's versions, and its role may pass only roles under the stack's
node path. The names follow from the stack, its region and the project, so the enforcer can tell an
instance running with another project's role without asking anyone.
"""

from __future__ import annotations

import hashlib

NODE_PATH_ROOT = "/condor-annex/nodes/"
NAME_PREFIX = "annex-node-"
_PROJECT_CHARACTERS_KEPT = 40  # IAM names have 64 characters; the digest keeps names distinct


def node_role_path(stack_name: str, region: str) -> str:
    """The IAM path of every node role (and profile) of one stack: what the broker may pass."""
    return f"{NODE_PATH_ROOT}{stack_name}/{region}/"


def node_role_name(stack_name: str, region: str, project_id: str) -> str:
    """The role of one project's nodes; its instance profile has the same name.

    IAM names are account-wide, and a stack of the same name may exist in every region, so the
    digest covers all three; the project stays readable in the name.
    """
    digest = hashlib.sha256(f"{stack_name}\0{region}\0{project_id}".encode()).hexdigest()[:10]
    return f"{NAME_PREFIX}{project_id[:_PROJECT_CHARACTERS_KEPT]}-{digest}"


def profile_name_of(arn: str) -> str:
    """The name at the end of an instance profile's ARN (``...:instance-profile/path/name``)."""
    return arn.rsplit("/", 1)[-1]
