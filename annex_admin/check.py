"""`annex-admin check-setup`: is everything the tools need in place, and is the enforcer sweeping?"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence

import botocore.exceptions

from annex_cloud import metrics
from annex_cloud.guardrails import SWEEP_STALE_AFTER_SECONDS
from annex_admin.concurrency import UNRESERVED_MINIMUM, account_concurrency, reserved_of
from annex_common.aws import AwsClients, error_code
from annex_common.errors import AnnexError, AwsFailure
from annex_common.times import format_local_short, parse_utc_stamp
from annex_admin.stack import HEALTHY_STATES, admin_command, describe_stack, recovery_advice
from templates import contract
from templates.node_bootstrap import bootstrap_artifact

# How far back check-setup looks for the enforcer's last sweep.
SWEEP_LOOKBACK = timedelta(hours=3)


@dataclass(frozen=True)
class CheckItem:
    name: str
    ok: bool
    detail: str
    warning: bool = False  # works, but something the administrator should know and may fix


@dataclass
class CheckReport:
    stack_name: str
    items: list[CheckItem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.items) and all(item.ok for item in self.items)

    def to_dict(self, region: str) -> dict[str, object]:
        return {
            "stack_name": self.stack_name,
            "region": region,
            "complete": self.ok,
            "checks": [{"name": i.name, "ok": i.ok, "warning": i.warning, "detail": i.detail} for i in self.items],
        }


class Notice(Exception):
    """A check's detail for something that works but that the administrator should know."""


def _probe(name: str, call: Callable[[], str]) -> CheckItem:
    """One check: its detail, or what failed in words (never a Python value)."""
    try:
        return CheckItem(name, True, call())
    except Notice as exc:
        return CheckItem(name, True, str(exc), warning=True)
    except botocore.exceptions.ClientError as exc:
        return CheckItem(name, False, f"{error_code(exc)}: {exc.response['Error'].get('Message', '')}")
    except AnnexError as exc:
        return CheckItem(name, False, exc.what + (f" ({exc.why})" if exc.why else ""))
    except KeyError as exc:
        return CheckItem(name, False, f"AWS's answer lacks {exc.args[0] if exc.args else 'a field'}")
    except (botocore.exceptions.BotoCoreError, ValueError) as exc:
        return CheckItem(name, False, str(exc))


def check_setup(clients: AwsClients, stack_name: str, now: datetime | None = None) -> CheckReport:
    now = now or datetime.now(timezone.utc)
    report = CheckReport(stack_name)
    raw = describe_stack(clients, stack_name)
    if raw is None:
        report.items.append(CheckItem(
            "stack", False,
            f"no stack {stack_name} in {clients.region}: run `{admin_command('setup', stack_name, clients)}` "
            "(or check --region and --stack-name)",
        ))
        return report
    status = raw["StackStatus"]
    healthy = status in HEALTHY_STATES
    report.items.append(
        CheckItem("stack", healthy, status if healthy else f"{status}: {recovery_advice(status)}")
    )
    outputs = {o["OutputKey"]: o["OutputValue"] for o in raw.get("Outputs", [])}
    missing = [key for key in contract.REQUIRED_OUTPUTS if not outputs.get(key)]
    report.items.append(
        CheckItem("outputs", not missing, "all present" if not missing else "missing: " + ", ".join(missing))
    )
    if missing:
        return report
    ec2, iam = clients.ec2, clients.iam
    subnets = outputs[contract.OUT_SUBNETS].split(",")
    launch_templates = dict(pair.split("=", 1) for pair in outputs[contract.OUT_LAUNCH_TEMPLATES].split(","))
    report.items += [
        _probe("network", lambda: f"{len(ec2.describe_subnets(SubnetIds=subnets)['Subnets'])} subnets in "
               f"{outputs[contract.OUT_AZS]}"),
        _probe("security group", lambda: _security_group_detail(clients, outputs[contract.OUT_SECURITY_GROUP])),
        _image_item(clients, stack_name, outputs, now),
        _probe("launch templates", lambda: _launch_templates_detail(clients, launch_templates)),
        _probe("bucket", lambda: (clients.s3.head_bucket(Bucket=outputs[contract.OUT_BUCKET]),
                                  outputs[contract.OUT_BUCKET])[1]),
        _probe("node bootstrap", lambda: _bootstrap_detail(clients, outputs[contract.OUT_CODE_BUCKET])),
        _probe("node roles", lambda: _node_roles_detail(clients, stack_name, outputs)),
        _probe("scientists' records", lambda: _scientists_detail(clients, outputs[contract.OUT_REGISTRY_TABLE])),
        _probe("scientist policy", lambda: iam.get_policy(
            PolicyArn=outputs[contract.OUT_SCIENTIST_POLICY])["Policy"]["PolicyName"]),
        _probe("enforcer function", lambda: clients.awslambda.get_function(
            FunctionName=outputs[contract.OUT_ENFORCER_FUNCTION])["Configuration"]["FunctionName"]),
        _probe("broker function", lambda: clients.awslambda.get_function(
            FunctionName=outputs[contract.OUT_BROKER_FUNCTION])["Configuration"]["FunctionName"]),
        _probe("registry", lambda: _registry_detail(clients, stack_name, outputs)),
        _probe("pool", lambda: _pool_detail(clients, stack_name)),
        _concurrency_item(clients, outputs),
        _probe("enforcer schedule", lambda: _rule_detail(clients, outputs[contract.OUT_ENFORCER_RULE])),
        _probe("state-change rule", lambda: _rule_detail(clients, outputs[contract.OUT_ENFORCER_STATE_RULE])),
        _probe("alarm topic", lambda: _topic_detail(clients, outputs[contract.OUT_ALARM_TOPIC])),
        _sweep_item(clients, raw, now),
    ]
    return report


def _security_group_detail(clients: AwsClients, group_id: str) -> str:
    try:
        groups = clients.ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) != "InvalidGroup.NotFound":
            raise
        groups = []
    if not groups:
        raise ValueError(f"{group_id}, named by the stack's outputs, does not exist: run `annex-admin setup`")
    ssh = sorted(r["CidrIp"] for p in groups[0].get("IpPermissions", []) if p.get("FromPort") == 22
                 for r in p.get("IpRanges", []))
    return f"{group_id} (" + (f"SSH from {', '.join(ssh)}" if ssh else "no inbound access") + ")"


def _launch_templates_detail(clients: AwsClients, launch_templates: dict[str, str]) -> str:
    from annex_admin.nodes import existing_templates, missing_templates

    found = existing_templates(clients.ec2, list(launch_templates.values()))
    missing = missing_templates(launch_templates, found)
    if missing:
        raise ValueError(f"named by the stack's outputs but missing in EC2: {', '.join(missing)}; run `annex-admin setup`")
    return ", ".join(found[tid]["LaunchTemplateName"] for _, tid in sorted(launch_templates.items()))


def _concurrency_item(clients: AwsClients, outputs: dict[str, str]) -> CheckItem:
    """The enforcer's reserved executions: a warning when it has none (setup could not reserve)."""
    name = "concurrency"
    try:
        enforcer = reserved_of(clients, [outputs[contract.OUT_ENFORCER_FUNCTION]])
        broker = reserved_of(clients, [outputs[contract.OUT_BROKER_FUNCTION]])
        limit, unreserved = account_concurrency(clients)
    except AwsFailure as failure:
        return CheckItem(name, False, f"{failure.what}: {failure.why}")
    if enforcer:
        ceiling = f"broker at most {broker}" if broker else "broker without a ceiling"
        return CheckItem(name, True, f"enforcer {enforcer} reserved, {ceiling} (account: {unreserved} of {limit} unreserved)")
    return CheckItem(
        name, True,
        f"the enforcer has no reserved executions (account: {limit}, {unreserved} unreserved; AWS keeps "
        f"{UNRESERVED_MINIMUM} unreserved): a flood of broker requests could delay its sweep. Ask AWS Support "
        "to raise the account's Lambda concurrency, then run `annex-admin setup`.",
        warning=True,
    )


def _image_item(clients: AwsClients, stack_name: str, outputs: dict[str, str], now: datetime) -> CheckItem:
    """The image the stack's launch templates name (as its template records it): built by
    build-image, chosen by setup or given, its age and HTCondor version; a warning once it is old."""
    from annex_admin.image import describe_image, image_summary
    from annex_admin.remembered import current_choices

    try:
        choices = current_choices(clients, stack_name)
        image_id = (choices.image_id if choices else None) or outputs[contract.OUT_IMAGE]
        chosen = choices.image_chosen_by_setup if choices and choices.image_id == image_id else None
        usable, stale, words = image_summary(describe_image(clients, image_id), image_id, now, chosen)
    except (botocore.exceptions.BotoCoreError, AnnexError) as exc:
        return CheckItem("image", False, getattr(exc, "what", str(exc)))
    return CheckItem("image", usable, words, warning=stale)


def _node_roles_detail(clients: AwsClients, stack_name: str, outputs: dict[str, str]) -> str:
    """Every project with a scientist has its own node role, profile and current template versions."""
    from annex_admin.nodes import NodeScope, node_problems
    from annex_cloud.registry import Registry

    registry = Registry(clients.client("dynamodb"), outputs[contract.OUT_REGISTRY_TABLE])
    fine, problems = node_problems(clients, NodeScope.of(stack_name, clients.region, outputs), registry)
    if problems:
        raise ValueError("; ".join(problems))
    if not fine:
        return f"none yet (issue-credentials makes one per project, under {outputs[contract.OUT_NODE_ROLE_PATH]})"
    return f"{len(fine)} project(s), each reading only its own material: {', '.join(fine)}"


def _bootstrap_detail(clients: AwsClients, code_bucket: str) -> str:
    """The bootstrap this version of condor-annex ships is where the launch templates fetch it."""
    key = bootstrap_artifact().key
    try:
        clients.s3.head_object(Bucket=code_bucket, Key=key)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            raise ValueError(f"s3://{code_bucket}/{key} is missing: run `annex-admin setup`") from exc
        raise
    return f"s3://{code_bucket}/{key}"


def _rule_detail(clients: AwsClients, rule_name: str) -> str:
    rule = clients.events.describe_rule(Name=rule_name)
    if rule.get("State") != "ENABLED":
        raise ValueError(f"rule {rule_name} is {rule.get('State')}")
    return f"{rule_name} ({rule.get('ScheduleExpression') or 'EC2 instance state changes'})"


def _topic_detail(clients: AwsClients, topic_arn: str) -> str:
    sns = clients.client("sns")
    attributes = sns.get_topic_attributes(TopicArn=topic_arn)["Attributes"]
    confirmed = int(attributes.get("SubscriptionsConfirmed", 0))
    pending = int(attributes.get("SubscriptionsPending", 0))
    name = topic_arn.rsplit(':', 1)[-1]
    if confirmed == 0:
        who = f"{pending} subscription(s) awaiting confirmation, none confirmed" if pending else "nobody is subscribed"
        raise Notice(f"{name}: {who}, so the enforcer's alarms (a failing sweep, an instance it could not end, "
                     "no heartbeat) reach no one. Subscribe with `annex-admin setup --notify-email ADDRESS` "
                     "and confirm SNS's email")
    waiting = f", {pending} awaiting confirmation" if pending else ""
    return f"{name}: {confirmed} subscription(s){waiting}"


# --- the enforcer's last sweep, from its metrics ---------------------------------------------


@dataclass(frozen=True)
class SweepRecord:
    last_sweep: datetime | None  # the newest heartbeat
    could_not_end: float  # instances left alive by that sweep and any check after it


def sweep_record(
    heartbeats: Sequence[tuple[datetime, float]], could_not_end: Sequence[tuple[datetime, float]],
    since: datetime | None = None,
) -> SweepRecord:
    """The last sweep and what was left unended since, from per-minute sums of the two metrics.

    Only sweeps from ``since`` on count (the stack's creation): the metrics are per stack name,
    and an earlier stack of the same name, torn down, left its own."""
    start = since.replace(second=0, microsecond=0) if since is not None else None
    beats = [moment for moment, value in heartbeats if value > 0 and (start is None or moment >= start)]
    if not beats:
        return SweepRecord(None, 0.0)
    last = max(beats)
    return SweepRecord(last, sum(value for moment, value in could_not_end if moment >= last))


def judge_sweeps(record: SweepRecord, now: datetime, stack_changed: datetime | None) -> CheckItem:
    stale = timedelta(seconds=SWEEP_STALE_AFTER_SECONDS)
    if record.last_sweep is None:
        if stack_changed is not None and now - stack_changed < stale:
            return CheckItem("enforcer sweeps", True, f"none yet: the stack changed {_ago(now - stack_changed)}, "
                             "and the schedule runs every 5 minutes")
        hours = SWEEP_LOOKBACK.total_seconds() / 3600
        return CheckItem("enforcer sweeps", False, f"no sweep in the last {hours:g} h: leases are not being "
                         "enforced; see the enforcer function's log")
    when = f"last sweep {format_local_short(record.last_sweep)}, {_ago(now - record.last_sweep)}"
    if now - record.last_sweep > stale:
        return CheckItem("enforcer sweeps", False, f"{when}: over {SWEEP_STALE_AFTER_SECONDS // 60} minutes, "
                         "leases are not being enforced; see the enforcer function's log")
    if record.could_not_end > 0:
        return CheckItem("enforcer sweeps", False, f"{when}, left {record.could_not_end:g} instance(s) it could "
                         "not end; `annex-admin enforce` tries again and says why")
    return CheckItem("enforcer sweeps", True, when)


def _ago(delta: timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    if minutes < 120:
        return f"{minutes} min ago"
    return f"{minutes // 60} h ago"


def read_sweep_metrics(
    cloudwatch: Any, stack_name: str, now: datetime
) -> tuple[list[tuple[datetime, float]], list[tuple[datetime, float]]]:
    """Per-minute sums of Heartbeat and CouldNotEnd over the look-back window."""
    queries = [
        {
            "Id": name.lower(),
            "MetricStat": {
                "Metric": {"Namespace": metrics.NAMESPACE, "MetricName": name,
                           "Dimensions": metrics.dimensions(stack_name)},
                "Period": 60,
                "Stat": "Sum",
            },
        }
        for name in (metrics.HEARTBEAT, metrics.COULD_NOT_END)
    ]
    series: dict[str, list[tuple[datetime, float]]] = {q["Id"]: [] for q in queries}
    # Whole minutes, so that each sum's time is the minute it covers (compared with the stack's creation).
    start = (now - SWEEP_LOOKBACK).replace(second=0, microsecond=0)
    request: dict[str, Any] = {"MetricDataQueries": queries, "StartTime": start,
                               "EndTime": now + timedelta(minutes=1)}
    while True:
        response = cloudwatch.get_metric_data(**request)
        for result in response.get("MetricDataResults", []):
            series[result["Id"]] += list(zip(result.get("Timestamps", []), result.get("Values", [])))
        if not response.get("NextToken"):
            break
        request["NextToken"] = response["NextToken"]
    return series[metrics.HEARTBEAT.lower()], series[metrics.COULD_NOT_END.lower()]


def _last_change(stack: dict[str, Any]) -> datetime | None:
    return _moment(stack.get("LastUpdatedTime") or stack.get("CreationTime"))


def _moment(moment: Any) -> datetime | None:
    if not isinstance(moment, datetime):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _sweep_item(clients: AwsClients, stack: dict[str, Any], now: datetime) -> CheckItem:
    stack_name = stack["StackName"]
    try:
        heartbeats, unended = read_sweep_metrics(clients.client("cloudwatch"), stack_name, now)
    except botocore.exceptions.ClientError as exc:
        return CheckItem("enforcer sweeps", False, f"could not read the enforcer's metrics: {error_code(exc)}")
    except botocore.exceptions.BotoCoreError as exc:
        return CheckItem("enforcer sweeps", False, f"could not read the enforcer's metrics: {exc}")
    return judge_sweeps(sweep_record(heartbeats, unended, since=_moment(stack.get("CreationTime"))), now,
                        _last_change(stack))


def _scientists_detail(clients: AwsClients, table: str) -> str:
    """Every scientist's record names her IAM user (ARN and unique id): the broker refuses one
    that names only a user name, as an earlier version wrote them."""
    from annex_cloud.registry import Registry

    users = list(Registry(clients.client("dynamodb"), table).users())
    unbound = sorted(u.user for u in users if not (u.arn and u.user_id))
    if unbound:
        raise ValueError(
            f"made by an earlier version, naming no IAM ARN or unique id (the broker refuses them): "
            f"{', '.join(unbound)}; run `annex-admin issue-credentials` for each again"
        )
    revoked = sum(1 for u in users if u.revoked)
    return f"{len(users)} scientist(s), each bound to one IAM user" + (f"; {revoked} revoked" if revoked else "")


def _registry_detail(clients: AwsClients, stack_name: str, outputs: dict[str, str]) -> str:
    """The table answers, and prices every type the stack offers: the broker launches no type it
    cannot price."""
    from annex_admin.prices import missing_prices
    from annex_cloud.registry import Registry

    table = outputs[contract.OUT_REGISTRY_TABLE]
    book = Registry(clients.client("dynamodb"), table).prices()
    if book is None or not book.hourly:
        raise ValueError(f"{table} holds no prices: run `{admin_command('setup', stack_name, clients)}` again")
    offered = [t for t in outputs[contract.OUT_INSTANCE_TYPES].split(",") if t]
    missing = missing_prices(book, offered)
    if missing:
        raise ValueError(
            f"{table} holds no price for {', '.join(missing)}, which the stack offers: the broker launches none of "
            f"{'it' if len(missing) == 1 else 'them'}; run `{admin_command('setup', stack_name, clients)}` again, "
            "or leave them out with --instance-types"
        )
    fetched = parse_utc_stamp(book.fetched_at)
    return f"{table} (prices from {book.explained}, {format_local_short(fetched) if fetched else book.fetched_at})"


def _pool_detail(clients: AwsClients, stack_name: str) -> str:
    """The pool the stack's annexes join: without it the broker refuses every launch."""
    from annex_cloud.pools import pool_parameter, read_pool_parameter

    parameter = pool_parameter(stack_name)
    record = admin_command("pool set --collector HOST[:PORT] --trust-domain DOMAIN --signing-key-file FILE",
                           stack_name, clients)
    try:
        pool = read_pool_parameter(clients.ssm, parameter)
    except ValueError as exc:
        raise ValueError(f"the pool recorded in {parameter} cannot be read ({exc}): run `{record}` again") from None
    if pool is None:
        raise ValueError(f"no pool is recorded for stack {stack_name}, so every launch is refused: run `{record}`")
    return pool.describe()
