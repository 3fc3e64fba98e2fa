"""Scientists' credentials: an IAM user per scientist, and the administrator's record of her.

The record (the stack's registry table) says which project the user acts for and the project's
caps: the broker and the enforcer read it and nothing else. The user's IAM tags repeat it for the
administrator's eyes only; the bundle shows the caps to the scientist, and no check trusts either.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import botocore.exceptions

from annex_cloud import caps as cap_rules
from annex_cloud.caps import Caps
from annex_cloud.identity import function_arn
from annex_cloud.node.config import PROJECT_ID_PATTERN
from annex_cloud.pools import PoolSecret, pool_parameter
from annex_cloud.registry import NodeRecord, ProjectPool, Registry
from annex_admin.nodes import NodeScope, provide_node_access
from annex_common.aws import AwsClients, aws_errors, error_code
from annex_common.bundle import Bundle, load_bundle, write_bundle
from annex_common.errors import AnnexError, BadInput, Declined
from annex_admin.stack import StackInfo, read_stack
from templates import contract

# A project id becomes an S3 prefix, a tag and a node's configuration value: the nodes' rule.
PROJECT_RE = re.compile(PROJECT_ID_PATTERN)
USER_RE = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,64}$")
MANAGED_BY = "condor-annex"


@dataclass(frozen=True)
class CapsChange:
    """The caps the administrator gave on the command line; None keeps what the record has."""

    max_instances: int | None = None
    max_lease_hours: float | None = None
    max_spend_usd: float | None = None

    def applied_to(self, current: Caps) -> Caps:
        given = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return dataclasses.replace(current, **given)


@dataclass(frozen=True)
class ProjectPoolChange:
    """The project's pool as the command line gives it; None and False keep what is recorded."""

    pool: PoolSecret | None = None  # its own pool instead of the stack's
    stack_pool: bool = False  # back to the stack's pool
    own_key: bool | None = None  # may its scientists bring their own pool key?

    def applied_to(self, current: ProjectPool) -> ProjectPool:
        own_pool = True if self.pool is not None else (False if self.stack_pool else current.own_pool)
        own_key = current.own_key if self.own_key is None else self.own_key
        return ProjectPool(own_pool, own_key)


@dataclass(frozen=True)
class IssueRequest:
    stack_name: str
    project_id: str
    user: str
    output: Path
    caps: CapsChange
    pool: ProjectPoolChange = dataclasses.field(default_factory=lambda: ProjectPoolChange())


@dataclass(frozen=True)
class IssueResult:
    bundle: Bundle
    user_created: bool
    keys_removed: list[str]
    output: Path
    caps: Caps
    previous_caps: Caps | None
    node: NodeRecord  # the role the project's nodes run as, and its launch template versions
    pool: ProjectPool = ProjectPool()  # which pool the project joins, and whether she may bring her key


Confirm = Callable[[str], bool]


def validate_issue(project_id: str, user: str, caps: CapsChange, output: Path) -> None:
    if not PROJECT_RE.fullmatch(project_id or ""):
        raise BadInput(
            f"project id {project_id!r} is not allowed",
            "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            "Pass another --project-id.",
        )
    if not USER_RE.fullmatch(user or ""):
        raise BadInput(
            f"user name {user!r} is not a valid IAM user name",
            "IAM user names are 1-64 of letters, digits and + = , . @ _ -",
            "Pass another --user.",
        )
    applied = caps.applied_to(Caps())
    _check_positive_caps(applied)
    if applied.max_lease_hours > cap_rules.MAX_CAP_LEASE_HOURS:
        raise BadInput(
            f"--max-lease-hours {applied.max_lease_hours:g} is over a year",
            "annex configuration is kept at most 400 days",
            f"Pass at most {cap_rules.MAX_CAP_LEASE_HOURS}.",
        )
    if output.exists() and output.is_dir():
        raise BadInput(f"--output {output} is a directory", "the bundle is a file", "Pass a file path.")
    if not output.parent.exists():
        raise BadInput(f"the folder of --output {output} does not exist", "", "Create it first.")


def describe_existing_output(output: Path) -> str | None:
    """What --output would overwrite, in a person's words; None when nothing is there."""
    if not (output.exists() or output.is_symlink()):
        return None
    try:
        current = load_bundle(output)
    except BadInput:
        return f"the file {output}"
    return f"the bundle {output} (user {current.user}, project {current.project_id})"


def registry_of(clients: AwsClients, stack: StackInfo) -> Registry:
    return Registry(clients.client("dynamodb"), stack.output(contract.OUT_REGISTRY_TABLE))


def _check_positive_caps(caps: Caps) -> None:
    """Each cap named by its option and its value, never as a Python object."""
    if caps.max_instances < 1:
        raise BadInput(
            f"--max-instances {caps.max_instances} is not allowed",
            "a project needs room for at least one instance at once",
            "Pass --max-instances 1 or more.",
        )
    if not (math.isfinite(caps.max_lease_hours) and caps.max_lease_hours > 0):
        raise BadInput(
            f"--max-lease-hours {caps.max_lease_hours:g} is not allowed",
            "the longest lease is a positive number of hours",
            "Pass for example --max-lease-hours 72.",
        )
    if not (math.isfinite(caps.max_spend_usd) and caps.max_spend_usd > 0):
        raise BadInput(
            f"--max-spend {caps.max_spend_usd:g} is not allowed",
            "the spend cap is a positive amount of US dollars",
            "Pass for example --max-spend 500.",
        )


def _user_tags(project_id: str, caps: Caps) -> list[dict[str, str]]:
    return [
        {"Key": contract.USER_TAG_PROJECT, "Value": project_id},
        {"Key": contract.USER_TAG_MAX_INSTANCES, "Value": str(caps.max_instances)},
        {"Key": contract.USER_TAG_MAX_LEASE_HOURS, "Value": f"{caps.max_lease_hours:g}"},
        {"Key": contract.USER_TAG_MAX_SPEND, "Value": f"{caps.max_spend_usd:.2f}"},
        {"Key": contract.USER_TAG_MANAGED, "Value": MANAGED_BY},
    ]


@dataclass(frozen=True)
class IamUser:
    """An IAM user as IAM names it: what the administrator's record binds the broker to."""

    arn: str
    user_id: str  # IAM's unique id (AIDA…); a user deleted and made again gets another
    tags: dict[str, str]

    @classmethod
    def of(cls, user: dict) -> "IamUser":
        return cls(str(user["Arn"]), str(user["UserId"]), {t["Key"]: t["Value"] for t in user.get("Tags", [])})

    @property
    def partition(self) -> str:
        return self.arn.split(":")[1]

    @property
    def account(self) -> str:
        return self.arn.split(":")[4]


def existing_user(clients: AwsClients, user: str) -> IamUser | None:
    """The IAM user, or None when there is no such user."""
    try:
        found = clients.iam.get_user(UserName=user)["User"]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "NoSuchEntity":
            return None
        with aws_errors(f"could not look up the IAM user {user}"):
            raise
    return IamUser.of(found)


def check_ownership(
    request: IssueRequest, tags: dict[str, str] | None, recorded_project: str | None, *, revoked: bool = False
) -> None:
    """An existing user is ours (made by issue-credentials) and stays in her project, unless she
    was revoked: a revoked user may be issued for another project."""
    if tags is not None and tags.get(contract.USER_TAG_MANAGED) != MANAGED_BY:
        raise BadInput(
            f"the IAM user {request.user} was not created by condor-annex",
            "issue-credentials never takes over a user it did not make (its keys would be rotated away "
            "and teardown would delete it)",
            "Pass another --user for the scientist.",
        )
    current = recorded_project or (tags or {}).get(contract.USER_TAG_PROJECT)
    if current and current != request.project_id and not revoked:
        raise BadInput(
            f"the IAM user {request.user} belongs to project {current}, not {request.project_id}",
            "moving a scientist to another project would hand her running annexes to the wrong budget",
            f"Issue a new user for project {request.project_id}, or revoke {request.user} first.",
        )


def describe_lowering(old: Caps, new: Caps) -> list[str]:
    lowered = []
    if new.max_instances < old.max_instances:
        lowered.append(f"instances {old.max_instances} -> {new.max_instances}")
    if new.max_lease_hours < old.max_lease_hours:
        lowered.append(f"lease hours {old.max_lease_hours:g} -> {new.max_lease_hours:g}")
    if new.max_spend_usd < old.max_spend_usd:
        lowered.append(f"spend ${old.max_spend_usd:,.2f} -> ${new.max_spend_usd:,.2f}")
    return lowered


def instances_ended_by(clients: AwsClients, registry: Registry, project_id: str, caps: Caps) -> list[str]:
    """What the enforcer's next sweep would end in this project under ``caps``."""
    from datetime import datetime, timezone

    from annex_cloud import enforcer
    from annex_cloud.prices import stack_price_book

    with aws_errors(f"could not list project {project_id}'s instances"):
        instances = [i for i in enforcer.list_annex_instances(clients.ec2) if i.project_id == project_id]
        prices = stack_price_book(registry.prices(), clients.region)
    plan = enforcer.plan_terminations(instances, lambda _p: caps, prices, datetime.now(timezone.utc))
    return [f"{t.instance.instance_id} ({t.reason})" for t in plan.terminations]


def issue_credentials(clients: AwsClients, request: IssueRequest, confirm: Confirm) -> IssueResult:
    validate_issue(request.project_id, request.user, request.caps, request.output)
    stack = read_stack(clients, request.stack_name)
    policy_arn = stack.output(contract.OUT_SCIENTIST_POLICY)
    registry = registry_of(clients, stack)
    found = existing_user(clients, request.user)
    tags = found.tags if found else None
    with aws_errors("could not read the administrator's record"):
        recorded = registry.user(request.user)
        previous = registry.caps(request.project_id)
    check_ownership(request, tags, recorded.project_id if recorded else None,
                    revoked=bool(recorded and recorded.revoked))
    caps = request.caps.applied_to(previous or Caps())
    lowered = describe_lowering(previous, caps) if previous else []
    # One question for all it would change by surprise: lower caps, an existing --output file.
    parts = []
    if lowered:
        ended = instances_ended_by(clients, registry, request.project_id, caps)
        parts.append(f"Lower project {request.project_id}'s caps ({'; '.join(lowered)})?")
        if ended:
            parts.append(
                f"The enforcer would then end {len(ended)} running instance(s): "
                + ", ".join(ended[:5]) + (" ..." if len(ended) > 5 else "") + "."
            )
    replacing = describe_existing_output(request.output)
    if replacing is not None:
        parts.append(f"{'It also overwrites' if lowered else 'Overwrite'} {replacing}"
                     + (" with the new bundle." if lowered else " with the new bundle?"))
    if parts:
        question = " ".join(parts)
        if not confirm(question):
            raise Declined(question)
    iam = clients.iam
    created = tags is None
    with aws_errors(f"could not create or update the IAM user {request.user}"):
        if created:
            found = IamUser.of(iam.create_user(
                UserName=request.user, Path=contract.USER_PATH, Tags=_user_tags(request.project_id, caps))["User"])
        else:
            iam.tag_user(UserName=request.user, Tags=_user_tags(request.project_id, caps))
        iam.attach_user_policy(UserName=request.user, PolicyArn=policy_arn)
        registry.put_caps(request.project_id, caps)
    pool_choice = record_project_pool(clients, stack, registry, request)
    # Before the user's record: the broker launches for a recorded user only with her project's role.
    node = provide_node_access(clients, NodeScope.of(stack.name, clients.region, stack.outputs), registry,
                               request.project_id)
    assert found is not None
    with aws_errors(f"could not create or update the IAM user {request.user}"):
        # Who she is, as IAM names her: the broker acts for this account, ARN and unique id only.
        registry.put_user(request.user, request.project_id, arn=found.arn, user_id=found.user_id)
        # One live key per scientist: issuing again rotates. IAM allows two keys, so the oldest
        # goes first only when both slots are taken; the rest go once the new bundle is written.
        old_keys = sorted(
            iam.list_access_keys(UserName=request.user)["AccessKeyMetadata"], key=lambda k: k["CreateDate"]
        )
        old_ids = [k["AccessKeyId"] for k in old_keys]
        make_room = old_ids[:1] if len(old_ids) >= 2 else []
        _delete_keys(iam, request.user, make_room)
        key = iam.create_access_key(UserName=request.user)["AccessKey"]
    bundle = Bundle(
        region=clients.region,
        stack_name=request.stack_name,
        project_id=request.project_id,
        user=request.user,
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
        caps=caps,
        broker_arn=function_arn(found.partition, clients.region, found.account,
                                stack.output(contract.OUT_BROKER_FUNCTION)),
    )
    try:
        write_bundle(request.output, bundle)
    except OSError as exc:
        # Without its bundle the new key is of no use to anyone: take it back, keep the old ones.
        with aws_errors("could not withdraw the key whose bundle could not be written"):
            _delete_keys(iam, request.user, [key["AccessKeyId"]])
        raise AnnexError(
            f"could not write the bundle {request.output}",
            exc.strerror or str(exc),
            "Choose an --output path you can write; the scientist's earlier key still works.",
        ) from exc
    with aws_errors(f"could not retire the earlier keys of {request.user}"):
        _delete_keys(iam, request.user, [k for k in old_ids if k not in make_room])
    return IssueResult(bundle, created, old_ids, request.output, caps, previous, node, pool_choice)


def record_project_pool(clients: AwsClients, stack: StackInfo, registry: Registry, request: IssueRequest) -> ProjectPool:
    """The project's own pool (its secret kept as the stack's is) and whether she may bring her key."""
    from annex_admin.pool import apply_pool, plan_pool, remove_pool

    change = request.pool
    with aws_errors(f"could not record the pool of project {request.project_id}"):
        current = registry.project_pool(request.project_id)
        choice = change.applied_to(current)
        if change.pool is not None:
            apply_pool(clients, plan_pool(clients, stack, change.pool, request.project_id))
        elif change.stack_pool:
            remove_pool(clients, pool_parameter(stack.name, request.project_id))
        if choice != current:
            registry.put_project_pool(request.project_id, choice)
    return choice


def _delete_keys(iam, user: str, key_ids: list[str]) -> None:
    """Deactivate first, so no key stays usable if a later delete fails."""
    for key_id in key_ids:
        iam.update_access_key(UserName=user, AccessKeyId=key_id, Status="Inactive")
    for key_id in key_ids:
        iam.delete_access_key(UserName=user, AccessKeyId=key_id)


@dataclass(frozen=True)
class RevokeResult:
    user: str
    keys_removed: list[str]
    record_revoked: bool  # the administrator's record of her is marked revoked (False: she had none)
    policy_detached: bool  # the scientists' policy was attached to her user, and is no more


def revoke_credentials(clients: AwsClients, user: str, stack_name: str = contract.DEFAULT_STACK_NAME) -> RevokeResult:
    """Stop every way she could still ask: the record first (the broker refuses her from then on,
    session credentials made earlier included), then the policy, then her keys."""
    if not USER_RE.fullmatch(user or ""):
        raise BadInput(f"user name {user!r} is not a valid IAM user name", "", "Pass the --user you issued.")
    stack = read_stack(clients, stack_name)
    registry = registry_of(clients, stack)
    iam = clients.iam
    with aws_errors(f"could not revoke the credentials of {user}"):
        found = existing_user(clients, user)
        recorded = registry.user(user)
    if found is None and recorded is None:
        raise BadInput(f"there is no IAM user {user}", "nothing to revoke", "Check the --user name.")
    if found is not None and found.tags.get(contract.USER_TAG_MANAGED) != MANAGED_BY:
        raise BadInput(
            f"the IAM user {user} was not created by condor-annex",
            "revoke-credentials deletes only the keys of scientists issue-credentials made; this user's keys "
            "belong to someone else",
            "Check the --user name (the one given to issue-credentials).",
        )
    with aws_errors(f"could not revoke the credentials of {user}"):
        marked = registry.revoke_user(user) if recorded is not None else False
        if found is None:
            return RevokeResult(user, [], marked, False)
        detached = _detach_policy(iam, user, stack.output(contract.OUT_SCIENTIST_POLICY))
        keys = [k["AccessKeyId"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]]
        _delete_keys(iam, user, keys)
    return RevokeResult(user, keys, marked, detached)


def _detach_policy(iam, user: str, policy_arn: str) -> bool:
    """Detach the scientists' policy from the user; False when it was not attached."""
    try:
        iam.detach_user_policy(UserName=user, PolicyArn=policy_arn)
        return True
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "NoSuchEntity":
            return False
        raise
