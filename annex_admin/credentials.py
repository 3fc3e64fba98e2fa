"""Scientists' credentials: an IAM user per scientist, and the administrator's record of her.

The record (the stack's registry table) says which project the user acts for and the project's
caps: the broker and the enforcer read it and nothing else. The user's IAM tags repeat it for the
administrator's eyes only; the bundle shows the caps to the scientist, and no check trusts either.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from annex_cloud import caps as cap_rules
from annex_cloud.caps import Caps
from annex_cloud.expiry import format_expiry_tag
from annex_cloud.identity import function_arn
from annex_cloud.node.config import PROJECT_ID_PATTERN
from annex_cloud.pools import PoolSecret, pool_parameter
from annex_cloud.registry import NodeRecord, ProjectPool, Registry, UserRecord
from annex_admin.nodes import NodeScope, provide_node_access
from annex_admin.pool import PoolPlan, apply_pool, plan_pool, recorded_pool, remove_pool
from annex_common.aws import AwsClients, aws_errors, unless_missing
from annex_common.bundle import Bundle, folder_problem, load_bundle, write_bundle
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
    output: Path | None  # None: an issued scientist keeps her key and bundle (only the records change)
    caps: CapsChange
    pool: ProjectPoolChange = dataclasses.field(default_factory=lambda: ProjectPoolChange())


@dataclass(frozen=True)
class IssueResult:
    bundle: Bundle | None  # None: no --output, her key and bundle were kept
    user_created: bool
    keys_removed: list[str]
    output: Path | None
    caps: Caps
    previous_caps: Caps | None
    node: NodeRecord  # the role the project's nodes run as, and its launch template versions
    pool: ProjectPool = ProjectPool()  # which pool the project joins, and whether she may bring her key


Confirm = Callable[[str], bool]


def validate_issue(project_id: str, user: str, caps: CapsChange, output: Path | None) -> None:
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
    _check_cap_bounds(caps.applied_to(Caps()))
    if output is None:
        return
    if output.exists() and output.is_dir():
        raise BadInput(f"--output {output} is a directory", "the bundle is a file", "Pass a file path.")
    if not output.parent.exists():
        raise BadInput(f"the folder of --output {output} does not exist", "", "Create it first.")
    problem = folder_problem(output)
    if problem:  # found before any key is made, not after
        raise BadInput(f"cannot write the bundle {output}", problem, "Pass an --output in a folder you can write.")


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


_CAP_OPTIONS = {"max_instances": "--max-instances", "max_lease_hours": "--max-lease-hours", "max_spend_usd": "--max-spend"}


def _check_cap_bounds(caps: Caps) -> None:
    """Each cap within its range (annex_cloud.caps), named by its option and value, never as a Python object."""
    bound = cap_rules.out_of_bounds(caps)
    if bound is None:
        return
    option, value = _CAP_OPTIONS[bound.field], getattr(caps, bound.field)
    raise BadInput(
        f"{option} {value if isinstance(value, int) else format(value, 'g')} is not allowed",
        f"it must be from {bound.range_text()}: {bound.why}",
        f"Pass {option} from {bound.range_text()}.",
    )


def _user_tags(project_id: str, caps: Caps, stack_name: str, region: str) -> list[dict[str, str]]:
    return [
        {"Key": contract.USER_TAG_STACK, "Value": stack_name},
        {"Key": contract.USER_TAG_REGION, "Value": region},
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
    with aws_errors(f"could not look up the IAM user {user}"):
        found = unless_missing(lambda: clients.iam.get_user(UserName=user))
    return IamUser.of(found["User"]) if found else None


def _home_of(found: IamUser) -> tuple[str, str] | None:
    """The stack and region that issued the user, as her tags say; None for a user an earlier
    version tagged (no stack or region tag)."""
    stack, region = found.tags.get(contract.USER_TAG_STACK), found.tags.get(contract.USER_TAG_REGION)
    if stack and region:
        return stack, region
    return None


def check_ownership(request: IssueRequest, region: str, found: IamUser | None, recorded: UserRecord | None) -> None:
    """An existing user is ours (made by issue-credentials), of this stack in this region, and stays
    in her project, unless she was revoked: a revoked user may be issued for another project."""
    if found is not None:
        check_issued_here(request.user, request.stack_name, region, found, recorded)
    current = (recorded.project_id if recorded else None) or (found.tags if found else {}).get(contract.USER_TAG_PROJECT)
    if current and current != request.project_id and not (recorded and recorded.revoked):
        raise BadInput(
            f"the IAM user {request.user} belongs to project {current}, not {request.project_id}",
            "moving a scientist to another project would hand her running annexes to the wrong budget",
            f"Issue a new user for project {request.project_id}, or revoke {request.user} first.",
        )


def check_issued_here(user: str, stack_name: str, region: str, found: IamUser, recorded: UserRecord | None) -> None:
    """Refuse a user this stack did not issue: one made by someone else, or by the stack of another
    region or name (IAM users are account-wide: her keys and tags serve that stack)."""
    if found.tags.get(contract.USER_TAG_MANAGED) != MANAGED_BY:
        raise BadInput(
            f"the IAM user {user} was not created by condor-annex",
            "annex-admin never takes over a user it did not make (its keys would be rotated away "
            "and teardown would delete it)",
            "Pass another --user for the scientist.",
        )
    home = _home_of(found)
    # Untagged by an earlier version: hers is the stack whose registry records her.
    if home == (stack_name, region) or (home is None and recorded is not None):
        return
    where = f"stack {home[0]} in {home[1]}" if home else "another stack (her tags do not say which, and this one has no record of her)"
    other = f"{user}-{region}"
    suggestion = f"Pass another --user for this stack (for example {other})" if USER_RE.fullmatch(other) else \
        "Pass another --user for this stack"
    back = f", or give --region {home[1]} --stack-name {home[0]} to act on her there" if home else ""
    raise BadInput(
        f"the IAM user {user} belongs to {where}, not to stack {stack_name} in {region}",
        "IAM users are account-wide: acting on her here would replace her keys and caps and break the bundle "
        "she uses there; nothing was changed",
        f"{suggestion}{back}.",
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


@dataclass(frozen=True)
class IssuePlan:
    """What issue-credentials will do, read before anything is changed: the lines to show, and the
    question to ask when any of it takes something away or gives something back by surprise."""

    request: IssueRequest
    stack: StackInfo
    user: IamUser | None  # None: the user is created
    caps: Caps
    previous_caps: Caps | None
    pool: ProjectPool  # the project's pool choice once issued
    pool_now: ProjectPool
    pool_plan: PoolPlan | None  # the project's own pool to record (None: none to record)
    lines: list[str]  # what will happen, in the administrator's words
    asks: list[str]  # what needs a yes, briefly (empty: nothing to ask)

    @property
    def question(self) -> str | None:
        if not self.asks:
            return None
        return f"Issue {self.request.user}'s credentials ({'; '.join(self.asks)})?"


def plan_issue(clients: AwsClients, request: IssueRequest) -> IssuePlan:
    """Read the user, her record, the project's caps and pool; change nothing."""
    validate_issue(request.project_id, request.user, request.caps, request.output)
    stack = read_stack(clients, request.stack_name)
    registry = registry_of(clients, stack)
    found = existing_user(clients, request.user)
    with aws_errors("could not read the administrator's record"):
        recorded = registry.user(request.user)
        previous = registry.caps(request.project_id)
        pool_now = registry.project_pool(request.project_id)
    check_ownership(request, clients.region, found, recorded)
    user, project = request.user, request.project_id
    lines: list[str] = []
    asks: list[str] = []
    lines.append(f"IAM user {user}: " + ("created" if found is None else "updated") + f", for project {project}")
    if recorded and recorded.revoked:
        lines.append(f"{user} was revoked on {_when(recorded.revoked)}: this gives her access again")
        asks.append(f"give {user} access again")
    if recorded and recorded.project_id and recorded.project_id != project:
        lines.append(f"{user} moves from project {recorded.project_id} to project {project}: "
                     f"her {recorded.project_id} bundle stops working")
        asks.append(f"move her to project {project}")
    caps = request.caps.applied_to(previous or Caps())
    if previous is None or previous == caps:
        lines.append(f"caps{'' if previous is None else ' (unchanged)'}: {caps.describe()}")
    else:
        lines += [f"caps now:   {previous.describe()}", f"caps to be: {caps.describe()}"]
    lowered = describe_lowering(previous, caps) if previous else []
    if lowered:
        lines.append(f"this lowers project {project}'s caps ({'; '.join(lowered)})")
        ended = instances_ended_by(clients, registry, project, caps)
        if ended:
            lines.append(f"the enforcer would then end {len(ended)} running instance(s): "
                         + ", ".join(ended[:5]) + (" ..." if len(ended) > 5 else ""))
        asks.append("lower the caps")
    pool_plan, pool_lines = _plan_project_pool(clients, stack, request.pool, pool_now, project)
    pool = request.pool.applied_to(pool_now)
    if pool_lines:
        lines += pool_lines
        if previous is not None:  # a new project has no annexes to leave on the old pool
            asks.append(f"change project {project}'s pool")
    if pool.own_key != pool_now.own_key:
        lines.append(f"project {project}'s scientists " + ("may from now on" if pool.own_key else "may no longer")
                     + " launch into a personal pool with their own key (condor_annex --own-pool)")
    has_keys = found is not None and _has_keys(clients, user)
    if request.output is None:
        if not has_keys or (recorded and recorded.revoked):
            raise BadInput(
                f"issue-credentials for {user} needs --output",
                (f"{user} has no working key" if found is not None else f"{user} is a new scientist")
                + ": she needs a bundle (without --output, only an issued scientist's records change)",
                "Pass --output FILE for her new bundle.",
            )
        lines.append("her access key and bundle are kept (no --output)"
                     + ("; her bundle still shows the caps it was issued with, the broker applies the new ones"
                        if previous is not None and previous != caps else ""))
    elif has_keys:
        lines.append("her current access key is deleted once the new bundle is written: the bundle she has stops "
                     "working, and she must install the new one (condor_annex import-credentials); "
                     "to change only caps or pool and keep her key, leave out --output")
    replacing = describe_existing_output(request.output) if request.output is not None else None
    if replacing is not None:
        lines.append(f"overwrites {replacing} with the new bundle")
        asks.append(f"overwrite {request.output}")
    return IssuePlan(request, stack, found, caps, previous, pool, pool_now, pool_plan, lines, asks)


def _when(moment: str) -> str:
    """A moment the registry recorded (ISO 8601 UTC), as people read it."""
    from annex_common.times import format_local, parse_utc_stamp

    parsed = parse_utc_stamp(moment)
    return format_local(parsed) if parsed else moment


def _has_keys(clients: AwsClients, user: str) -> bool:
    with aws_errors(f"could not list the access keys of {user}"):
        return bool(clients.iam.list_access_keys(UserName=user)["AccessKeyMetadata"])


def _plan_project_pool(
    clients: AwsClients, stack: StackInfo, change: ProjectPoolChange, now: ProjectPool, project_id: str
) -> tuple[PoolPlan | None, list[str]]:
    """The project's own pool to record (as `pool set` plans the stack's), and what changes, in words."""
    keeps = "the project's running annexes keep their old pool until they end; annexes launched from now on join"
    if change.pool is not None:
        plan = plan_pool(clients, stack, change.pool, project_id)
        if plan.unchanged and now.own_pool:
            return plan, []
        before = plan.current.describe() if now.own_pool and plan.current else "the stack's pool"
        return plan, [f"pool of project {project_id} now:   {before}",
                      f"pool of project {project_id} to be: {plan.new.describe()}",
                      *plan.lines()[2:], f"{keeps} the new one"]
    if change.stack_pool and now.own_pool:
        own = recorded_pool(clients, pool_parameter(stack.name, project_id))
        return None, [f"pool of project {project_id} now:   {own.describe() if own else 'its own (unreadable)'}",
                      f"pool of project {project_id} to be: the stack's pool (its own is removed)",
                      f"{keeps} the stack's pool"]
    return None, []


def issue_credentials(clients: AwsClients, request: IssueRequest, confirm: Confirm) -> IssueResult:
    """Plan, ask what needs a yes, then issue."""
    plan = plan_issue(clients, request)
    if plan.question is not None and not confirm(plan.question):
        raise Declined(plan.question)
    return apply_issue(clients, plan)


def apply_issue(clients: AwsClients, plan: IssuePlan) -> IssueResult:
    """Issue as planned: the user, her record, the project's caps, pool and node role, one new key
    and the bundle."""
    request, stack, caps = plan.request, plan.stack, plan.caps
    registry = registry_of(clients, stack)
    iam = clients.iam
    tags = _user_tags(request.project_id, caps, stack.name, clients.region)
    with aws_errors(f"could not create or update the IAM user {request.user}"):
        if plan.user is None:
            found = IamUser.of(iam.create_user(UserName=request.user, Path=contract.USER_PATH, Tags=tags)["User"])
        else:
            found = plan.user
            iam.tag_user(UserName=request.user, Tags=tags)
        iam.attach_user_policy(UserName=request.user, PolicyArn=stack.output(contract.OUT_SCIENTIST_POLICY))
        registry.put_caps(request.project_id, caps)
    record_project_pool(clients, stack, registry, plan)
    # Before the user's record: the broker launches for a recorded user only with her project's role.
    node = provide_node_access(clients, NodeScope.of(stack.name, clients.region, stack.outputs), registry,
                               request.project_id)
    with aws_errors(f"could not create or update the IAM user {request.user}"):
        # Who she is, as IAM names her: the broker acts for this account, ARN and unique id only.
        registry.put_user(request.user, request.project_id, arn=found.arn, user_id=found.user_id)
    if request.output is None:
        return IssueResult(None, False, [], None, caps, plan.previous_caps, node, plan.pool)
    bundle, old_ids = _new_bundle(clients, stack, request, request.output, found, caps)
    return IssueResult(bundle, plan.user is None, old_ids, request.output, caps, plan.previous_caps, node, plan.pool)


def _new_bundle(
    clients: AwsClients, stack: StackInfo, request: IssueRequest, output: Path, found: IamUser, caps: Caps
) -> tuple[Bundle, list[str]]:
    """Her one fresh key, in the bundle written to ``output``; the earlier keys' ids, deleted."""
    iam = clients.iam
    with aws_errors(f"could not create or update the IAM user {request.user}"):
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
        write_bundle(output, bundle)
    except OSError as exc:
        # Without its bundle the new key is of no use to anyone: take it back, keep the old ones.
        with aws_errors("could not withdraw the key whose bundle could not be written"):
            _delete_keys(iam, request.user, [key["AccessKeyId"]])
        raise AnnexError(
            f"could not write the bundle {output}",
            exc.strerror or str(exc),
            "Choose an --output path you can write; the scientist's earlier key still works.",
        ) from exc
    with aws_errors(f"could not retire the earlier keys of {request.user}"):
        _delete_keys(iam, request.user, [k for k in old_ids if k not in make_room])
    return bundle, old_ids


def record_project_pool(clients: AwsClients, stack: StackInfo, registry: Registry, plan: IssuePlan) -> None:
    """The project's own pool (its secret kept as the stack's is) and whether she may bring her key."""
    project_id = plan.request.project_id
    with aws_errors(f"could not record the pool of project {project_id}"):
        if plan.pool_plan is not None:
            apply_pool(clients, plan.pool_plan)
        elif plan.request.pool.stack_pool:
            remove_pool(clients, pool_parameter(stack.name, project_id))
        if plan.pool != plan.pool_now:
            registry.put_project_pool(project_id, plan.pool)


def _delete_keys(iam, user: str, key_ids: list[str]) -> None:
    """Deactivate first, so no key stays usable if a later delete fails."""
    for key_id in key_ids:
        iam.update_access_key(UserName=user, AccessKeyId=key_id, Status="Inactive")
    for key_id in key_ids:
        iam.delete_access_key(UserName=user, AccessKeyId=key_id)


@dataclass(frozen=True)
class RevokePlan:
    """What revoke-credentials will do, read before anything is changed."""

    user: str
    stack: StackInfo
    project_id: str  # "" when neither her record nor her tags name one
    found: IamUser | None  # None: her IAM user is gone, only the record is left
    recorded: UserRecord | None
    keys: list[str]  # her access key ids (not secrets), deleted
    policy_attached: bool

    @property
    def already_revoked(self) -> bool:
        """Nothing left to do: her record says revoked, and she has no key and no policy."""
        return bool(self.recorded and self.recorded.revoked) and not self.keys and not self.policy_attached

    @property
    def revoked_on(self) -> str:
        return _when(self.recorded.revoked) if self.recorded and self.recorded.revoked else ""

    def lines(self) -> list[str]:
        lines = [f"user {self.user}" + (f", project {self.project_id}" if self.project_id else "")]
        if self.recorded is not None and not self.recorded.revoked:
            lines.append("her record is marked revoked: the broker refuses her whatever she signs with")
        if self.policy_attached:
            lines.append("the scientists' policy is detached from her user")
        if self.keys:
            lines.append(f"{len(self.keys)} access key(s) deleted ({', '.join(self.keys)}): her bundle stops working")
        lines.append("her running annexes keep their leases and the project's node role; the enforcer still ends "
                     "them on time")
        return lines


@dataclass(frozen=True)
class RevokeResult:
    user: str
    keys_removed: list[str]
    record_revoked: bool  # the administrator's record of her is marked revoked (False: she had none)
    policy_detached: bool  # the scientists' policy was attached to her user, and is no more


def plan_revoke(clients: AwsClients, user: str, stack_name: str = contract.DEFAULT_STACK_NAME) -> RevokePlan:
    """Read her user, record, keys and policy; change nothing. Only a user this stack issued."""
    if not USER_RE.fullmatch(user or ""):
        raise BadInput(f"user name {user!r} is not a valid IAM user name", "", "Pass the --user you issued.")
    stack = read_stack(clients, stack_name)
    registry = registry_of(clients, stack)
    with aws_errors(f"could not read the credentials of {user}"):
        found = existing_user(clients, user)
        recorded = registry.user(user)
    if found is None and recorded is None:
        raise BadInput(f"there is no IAM user {user}", "nothing to revoke", "Check the --user name.")
    if found is None:
        return RevokePlan(user, stack, recorded.project_id if recorded else "", None, recorded, [], False)
    check_issued_here(user, stack_name, clients.region, found, recorded)
    policy_arn = stack.output(contract.OUT_SCIENTIST_POLICY)
    with aws_errors(f"could not read the credentials of {user}"):
        keys = [k["AccessKeyId"] for k in clients.iam.list_access_keys(UserName=user)["AccessKeyMetadata"]]
        attached = [p["PolicyArn"] for p in clients.iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]]
    project = (recorded.project_id if recorded else "") or found.tags.get(contract.USER_TAG_PROJECT, "")
    return RevokePlan(user, stack, project, found, recorded, keys, policy_arn in attached)


def revoke_credentials(clients: AwsClients, user: str, stack_name: str = contract.DEFAULT_STACK_NAME) -> RevokeResult:
    """Plan and revoke at once (no question: the CLI asks between the two)."""
    return apply_revoke(clients, plan_revoke(clients, user, stack_name))


def apply_revoke(clients: AwsClients, plan: RevokePlan) -> RevokeResult:
    """Stop every way she could still ask: the record first (the broker refuses her from then on,
    session credentials made earlier included), then the policy, then her keys."""
    registry = registry_of(clients, plan.stack)
    iam = clients.iam
    with aws_errors(f"could not revoke the credentials of {plan.user}"):
        marked = registry.revoke_user(plan.user) if plan.recorded is not None else False
        if plan.found is None:
            return RevokeResult(plan.user, [], marked, False)
        detached = _detach_policy(iam, plan.user, plan.stack.output(contract.OUT_SCIENTIST_POLICY))
        # Listed again: a key made since the plan goes too.
        keys = [k["AccessKeyId"] for k in iam.list_access_keys(UserName=plan.user)["AccessKeyMetadata"]]
        _delete_keys(iam, plan.user, keys)
    return RevokeResult(plan.user, keys, marked, detached)


def _detach_policy(iam, user: str, policy_arn: str) -> bool:
    """Detach the scientists' policy from the user; False when it was not attached."""
    return unless_missing(lambda: iam.detach_user_policy(UserName=user, PolicyArn=policy_arn)) is not None


@dataclass(frozen=True)
class ScientistView:
    """One scientist as the administrator's record and IAM have her: read, never changed."""

    user: str
    project_id: str
    caps: Caps | None  # None: her project has no caps record
    own_pool: str  # the collector of her project's own pool; "" when it joins the stack's
    own_key: bool  # may she bring her own pool key?
    revoked: str  # when she was revoked (as recorded, ISO 8601 UTC); "" while she may ask
    key_created: list[datetime]  # her access keys' creation times (UTC); [] when she has none
    iam_user: bool  # False: her IAM user is gone, only the record is left

    def to_dict(self) -> dict[str, object]:
        return {
            "user": self.user,
            "project_id": self.project_id,
            "caps": dataclasses.asdict(self.caps) if self.caps else None,
            "pool": {"own": bool(self.own_pool), "collector": self.own_pool or None, "own_key_allowed": self.own_key},
            "revoked": self.revoked or None,
            "access_keys_created": [format_expiry_tag(moment) for moment in self.key_created],
            "iam_user": self.iam_user,
        }


def list_scientists(clients: AwsClients, stack_name: str) -> list[ScientistView]:
    """Every scientist the stack's registry records, with her project's caps and pool and her keys."""
    stack = read_stack(clients, stack_name)
    registry = registry_of(clients, stack)
    with aws_errors("could not read the administrator's record"):
        records = sorted(registry.users(), key=lambda r: r.user)
        projects = sorted({r.project_id for r in records})
        caps = {p: registry.caps(p) for p in projects}
        pools = {p: registry.project_pool(p) for p in projects}
    collectors = {p: _own_collector(clients, stack.name, p) for p in projects if pools[p].own_pool}
    views = []
    for record in records:
        keys = _key_times(clients, record.user)
        views.append(ScientistView(
            record.user, record.project_id, caps[record.project_id], collectors.get(record.project_id, ""),
            pools[record.project_id].own_key, record.revoked, keys or [], keys is not None,
        ))
    return views


def _own_collector(clients: AwsClients, stack_name: str, project_id: str) -> str:
    pool = recorded_pool(clients, pool_parameter(stack_name, project_id))
    return pool.collector_host if pool else "unreadable: record it again"


def _key_times(clients: AwsClients, user: str) -> list[datetime] | None:
    """When her access keys were made, oldest first; None when her IAM user is gone."""
    with aws_errors(f"could not list the access keys of {user}"):
        found = unless_missing(lambda: clients.iam.list_access_keys(UserName=user))
    return sorted(k["CreateDate"] for k in found["AccessKeyMetadata"]) if found else None
