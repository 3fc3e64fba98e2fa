"""The projects' node roles (``annex_cloud.nodes``), as the administrator's tools keep them.

- ``issue-credentials`` gives a project its role, instance profile and one version of each of the
  stack's launch templates that adds that profile to the template's default version, and records
  them (``provide_node_access``);
- ``setup``, once the stack changed, gives every project versions of the new defaults
  (``follow_templates``), so a project never launches an image or bootstrap the stack dropped;
- ``check-setup`` says whether every project with a scientist has all of it (``check_node_access``);
- ``teardown`` removes every role and profile under the stack's node path (``remove_node_roles``).

``revoke-credentials`` leaves them: a project's running annexes keep reading their material with
the role until their leases end, and other scientists of the project launch with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import botocore.exceptions

from annex_cloud.nodes import node_role_name
from annex_cloud.registry import NodeRecord, NodeTemplate, Registry
from annex_common.aws import AwsClients, aws_errors, error_code, unless_missing
from annex_common.errors import AnnexError, NotReady
from templates import contract
from templates.policies import assume_role_document, node_role_policy

POLICY_NAME = "ReadOwnProjectMaterial"
MANAGED_BY = "condor-annex"
# At most a minute for a new instance profile to become readable (boto3 default: 40 × 1 s).
PROFILE_WAITER = {"Delay": 1, "MaxAttempts": 60}


@dataclass(frozen=True)
class NodeScope:
    """What a node role is made from, all read from the stack's outputs."""

    stack_name: str
    region: str
    path: str
    bucket: str
    code_bucket: str
    partition: str
    launch_templates: dict[str, str]  # instance type -> the stack's template id

    @classmethod
    def of(cls, stack_name: str, region: str, outputs: Mapping[str, str]) -> "NodeScope":
        def need(key: str) -> str:
            if not outputs.get(key):
                raise NotReady(
                    f"stack {stack_name} has no output {key}",
                    "it was made by an earlier version of annex-admin, which gave every node one shared role",
                    "Run `annex-admin setup` again, then issue-credentials for each project.",
                )
            return outputs[key]

        # Any ARN of the stack's names the partition; the scientists' policy is one.
        partition = need(contract.OUT_SCIENTIST_POLICY).split(":")[1]
        pairs = (item.split("=", 1) for item in need(contract.OUT_LAUNCH_TEMPLATES).split(",") if "=" in item)
        return cls(
            stack_name=stack_name,
            region=region,
            path=need(contract.OUT_NODE_ROLE_PATH),
            bucket=need(contract.OUT_BUCKET),
            code_bucket=need(contract.OUT_CODE_BUCKET),
            partition=partition,
            launch_templates=dict(pairs),
        )

    def name(self, project_id: str) -> str:
        return node_role_name(self.stack_name, self.region, project_id)

    def policy(self, project_id: str) -> dict[str, Any]:
        return json.loads(node_role_policy(self.bucket, self.code_bucket, project_id, self.partition).to_json())


def _tags(scope: NodeScope, project_id: str) -> list[dict[str, str]]:
    return [
        {"Key": contract.TAG_STACK, "Value": scope.stack_name},
        {"Key": contract.TAG_PROJECT, "Value": project_id},
        {"Key": contract.USER_TAG_MANAGED, "Value": MANAGED_BY},
    ]


def ensure_role(iam: Any, scope: NodeScope, project_id: str) -> tuple[str, str]:
    """The project's node role with its policy as this version writes it, inside its instance
    profile; (role ARN, profile ARN). Idempotent."""
    name = scope.name(project_id)
    role = unless_missing(lambda: iam.get_role(RoleName=name))
    if role is None:
        role = iam.create_role(
            RoleName=name, Path=scope.path,
            AssumeRolePolicyDocument=assume_role_document("ec2.amazonaws.com").to_json(),
            Description=f"condor-annex nodes of project {project_id}, stack {scope.stack_name} in {scope.region}",
            Tags=_tags(scope, project_id),
        )
    elif role["Role"]["Path"] != scope.path:
        raise AnnexError(
            f"an IAM role named {name} exists outside {scope.path}",
            "it was not made by condor-annex for this stack, and its permissions are unknown",
            "Remove or rename that role, then run issue-credentials again.",
        )
    iam.put_role_policy(RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(scope.policy(project_id)))
    profile = unless_missing(lambda: iam.get_instance_profile(InstanceProfileName=name))
    if profile is None:
        profile = iam.create_instance_profile(InstanceProfileName=name, Path=scope.path, Tags=_tags(scope, project_id))
    if name not in [r["RoleName"] for r in profile["InstanceProfile"].get("Roles", [])]:
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    # IAM is eventually consistent: wait until the new profile is readable before a template
    # version names it (EC2 may still take seconds more; the broker's fleet waits for that).
    iam.get_waiter("instance_profile_exists").wait(InstanceProfileName=name, WaiterConfig=PROFILE_WAITER)
    return role["Role"]["Arn"], profile["InstanceProfile"]["Arn"]


def existing_templates(ec2: Any, template_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The launch templates EC2 has among these ids, by id; a missing one is simply absent.

    EC2 refuses the whole request when one id is unknown, so the ids are then asked one by one."""
    if not template_ids:
        return {}
    try:
        answer = ec2.describe_launch_templates(LaunchTemplateIds=template_ids)["LaunchTemplates"]
    except botocore.exceptions.ClientError as exc:
        if not error_code(exc).startswith("InvalidLaunchTemplate"):
            raise
        if len(template_ids) == 1:
            return {}
        return {tid: lt for one in template_ids for tid, lt in existing_templates(ec2, [one]).items()}
    return {lt["LaunchTemplateId"]: lt for lt in answer}


def missing_templates(launch_templates: Mapping[str, str], found: Mapping[str, Any]) -> list[str]:
    """'m5.large (lt-0abc…)' for each of the stack's templates EC2 does not have."""
    return [f"{itype} ({tid})" for itype, tid in sorted(launch_templates.items()) if tid not in found]


def default_versions(ec2: Any, launch_templates: Mapping[str, str], stack_name: str) -> dict[str, int]:
    """Each of the stack's templates' default version number, by template id; NotReady naming
    the ones EC2 does not have (deleted outside CloudFormation)."""
    found = existing_templates(ec2, list(launch_templates.values()))
    missing = missing_templates(launch_templates, found)
    if missing:
        raise NotReady(
            f"stack {stack_name} names launch templates that EC2 does not have: {', '.join(missing)}",
            "they were deleted outside CloudFormation, or the stack's outputs are out of date",
            "`annex-admin check-setup` lists what else is missing; `annex-admin teardown` then "
            "`annex-admin setup` rebuilds the stack.",
        )
    return {tid: int(lt["DefaultVersionNumber"]) for tid, lt in found.items()}


def ensure_versions(
    ec2: Any, scope: NodeScope, project_id: str, profile_arn: str, current: NodeRecord | None
) -> dict[str, NodeTemplate]:
    """The project's version of each of the stack's templates: the recorded one while it still
    copies the template's default with the same profile, else a new one made from the default."""
    defaults = default_versions(ec2, scope.launch_templates, scope.stack_name)
    kept = current.templates if current is not None and current.profile_arn == profile_arn else {}
    versions: dict[str, NodeTemplate] = {}
    for itype, template_id in sorted(scope.launch_templates.items()):
        default = defaults[template_id]
        recorded = kept.get(itype)
        if recorded is not None and recorded.template_id == template_id and recorded.source_version == default:
            versions[itype] = recorded
            continue
        made = ec2.create_launch_template_version(
            LaunchTemplateId=template_id,
            SourceVersion=str(default),
            VersionDescription=f"condor-annex nodes of project {project_id}"[:255],
            LaunchTemplateData={"IamInstanceProfile": {"Arn": profile_arn}},
        )["LaunchTemplateVersion"]
        versions[itype] = NodeTemplate(template_id, int(made["VersionNumber"]), default)
    return versions


def provide_node_access(clients: AwsClients, scope: NodeScope, registry: Registry, project_id: str) -> NodeRecord:
    """The project's role, profile and template versions, made where missing and recorded."""
    with aws_errors(f"could not give project {project_id} its node role"):
        role_arn, profile_arn = ensure_role(clients.iam, scope, project_id)
        current = registry.node(project_id)
        versions = ensure_versions(clients.ec2, scope, project_id, profile_arn, current)
        record = NodeRecord(project_id, role_arn, profile_arn, versions)
        if record != current:
            registry.put_node(record)
    return record


def follow_templates(clients: AwsClients, scope: NodeScope, registry: Registry) -> list[str]:
    """After a stack change: every recorded project gets versions of the templates' current
    defaults (and of templates of new types). Returns the projects whose versions changed."""
    changed = []
    with aws_errors("could not bring the projects' launch template versions up to date"):
        for record in list(registry.nodes()):
            versions = ensure_versions(clients.ec2, scope, record.project_id, record.profile_arn, record)
            if versions != record.templates:
                registry.put_node(NodeRecord(record.project_id, record.role_arn, record.profile_arn, versions))
                changed.append(record.project_id)
    return changed


def node_problems(clients: AwsClients, scope: NodeScope, registry: Registry) -> tuple[list[str], list[str]]:
    """(projects whose nodes are in order, what is wrong) for every project with a scientist."""
    projects = sorted({user.project_id for user in registry.users()})
    defaults = default_versions(clients.ec2, scope.launch_templates, scope.stack_name) if projects else {}
    fine, problems = [], []
    for project_id in projects:
        found = _project_problems(clients, scope, registry, project_id, defaults)
        if found:
            problems += [f"{project_id}: {problem}" for problem in found]
        else:
            fine.append(project_id)
    return fine, problems


def _project_problems(
    clients: AwsClients, scope: NodeScope, registry: Registry, project_id: str, defaults: dict[str, int]
) -> list[str]:
    again = "run `annex-admin issue-credentials` for the project again"
    record = registry.node(project_id)
    if record is None:
        return [f"no node role recorded; {again}"]
    name = scope.name(project_id)
    iam = clients.iam
    role = unless_missing(lambda: iam.get_role(RoleName=name))
    if role is None or role["Role"]["Arn"] != record.role_arn:
        return [f"its node role {name} is missing; {again}"]
    policy = unless_missing(lambda: iam.get_role_policy(RoleName=name, PolicyName=POLICY_NAME))
    if policy is None or _document(policy["PolicyDocument"]) != scope.policy(project_id):
        return [f"the policy of {name} is not the one condor-annex writes; {again}"]
    profile = unless_missing(lambda: iam.get_instance_profile(InstanceProfileName=name))
    if profile is None or [r["RoleName"] for r in profile["InstanceProfile"].get("Roles", [])] != [name]:
        return [f"its instance profile {name} is missing or holds another role; {again}"]
    problems = []
    for itype, template_id in sorted(scope.launch_templates.items()):
        version = record.templates.get(itype)
        if version is None or version.template_id != template_id:
            problems.append(f"no version of the {itype} launch template; {again}")
        elif version.source_version != defaults[template_id]:
            problems.append(f"its {itype} version copies an older template; run `annex-admin setup`")
        elif _profile_of(clients.ec2, version) != record.profile_arn:
            problems.append(f"its {itype} version {version.version} does not name its profile; {again}")
    return problems


def _profile_of(ec2: Any, version: NodeTemplate) -> str | None:
    found = ec2.describe_launch_template_versions(
        LaunchTemplateId=version.template_id, Versions=[str(version.version)]
    )["LaunchTemplateVersions"]
    return found[0]["LaunchTemplateData"].get("IamInstanceProfile", {}).get("Arn") if found else None


def _document(document: Any) -> Any:
    # IAM answers URL-decoded JSON through boto3 as a dict; other clients may hand back the text.
    return json.loads(document) if isinstance(document, str) else document


def node_roles_at(iam: Any, path: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(instance profiles, roles) whose path is the stack's node path.

    A listing by ``PathPrefix`` is trusted no further than the path itself: what teardown deletes
    must be the stack's own (issue-credentials puts its roles and profiles at exactly that path),
    never something a looser answer, or a deeper path someone else chose, brought in."""
    profiles = [profile for page in iam.get_paginator("list_instance_profiles").paginate(PathPrefix=path)
                for profile in page["InstanceProfiles"] if profile.get("Path") == path]
    roles = [role for page in iam.get_paginator("list_roles").paginate(PathPrefix=path)
             for role in page["Roles"] if role.get("Path") == path]
    return profiles, roles


def remove_node_roles(iam: Any, path: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Every instance profile and role at the stack's node path; (removed, not removed)."""
    removed: list[str] = []
    not_removed: list[tuple[str, str]] = []

    def attempt(what: str, *steps: Callable[[], Any]) -> None:
        try:
            for step in steps:
                step()
            removed.append(what)
        except botocore.exceptions.ClientError as exc:
            not_removed.append((what, f"{error_code(exc)}: {exc.response['Error'].get('Message', '')}"))

    profiles, roles = node_roles_at(iam, path)
    for profile in profiles:
        name = profile["InstanceProfileName"]
        attempt(
            f"node instance profile {name}",
            *[lambda r=role["RoleName"], p=name: iam.remove_role_from_instance_profile(
                InstanceProfileName=p, RoleName=r) for role in profile.get("Roles", [])],
            lambda p=name: iam.delete_instance_profile(InstanceProfileName=p),
        )
    for role in roles:
        name = role["RoleName"]
        policies = iam.list_role_policies(RoleName=name)["PolicyNames"]
        attempt(
            f"node role {name}",
            *[lambda r=name, p=policy: iam.delete_role_policy(RoleName=r, PolicyName=p) for policy in policies],
            lambda r=name: iam.delete_role(RoleName=r),
        )
    return removed, not_removed
