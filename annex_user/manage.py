"""Watch, extend and end annexes of the scientist's project."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from annex_common.errors import BadInput
from annex_user import awsops, expiry as lease
from annex_user.context import AnnexContext
from annex_user.launch import TOKEN_IDENTITY, TOKEN_MARGIN, committed_spend, validate_annex_name
from annex_user.pricing import on_demand_prices
from templates import contract

STATUS_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]


@dataclass
class StatusRow:
    instance: awsops.AnnexInstance
    expiry: datetime | None
    in_pool: bool | None

    def to_json(self, now: datetime) -> dict[str, Any]:
        i = self.instance
        return {
            "instance_id": i.instance_id,
            "annex_name": i.annex_name,
            "project_id": i.project_id,
            "owner": i.owner,
            "state": i.state,
            "instance_type": i.instance_type,
            "availability_zone": i.zone,
            "launch_time": i.launch_time.strftime(contract.EXPIRY_FORMAT),
            "expiry": self.expiry.strftime(contract.EXPIRY_FORMAT) if self.expiry else None,
            "lease_remaining_seconds": max(int((self.expiry - now).total_seconds()), 0) if self.expiry else None,
            "in_pool": self.in_pool,
        }


@dataclass
class StatusReport:
    rows: list[StatusRow]
    collector_note: str


def annex_status(ctx: AnnexContext, *, annex_name: str | None, condor_config: str | None) -> StatusReport:
    if annex_name:
        validate_annex_name(annex_name)
    instances = awsops.list_annex_instances(
        ctx.clients, project_id=ctx.bundle.project_id, annex_name=annex_name, states=STATUS_STATES
    )
    joined, note = _ask_collector(condor_config)
    rows = [
        StatusRow(i, lease.from_tag(i.expiry_tag), None if joined is None else bool(joined.get(i.instance_id)))
        for i in sorted(instances, key=lambda i: (i.annex_name, i.launch_time, i.instance_id))
    ]
    return StatusReport(rows, note)


def _ask_collector(condor_config: str | None) -> tuple[dict[str, bool] | None, str]:
    """The pool's view, when its collector answers within seconds; EC2's view alone otherwise."""
    if not condor_config:
        return None, "CONDOR_CONFIG is not set: showing EC2's view only"
    from annex_user.pool import ask_collector, read_pool

    try:
        pool = read_pool(condor_config, timeout=10)
    except BadInput as exc:
        return None, f"the pool configuration could not be read ({exc.what}): showing EC2's view only"
    answer = ask_collector(pool, timeout=5)
    if answer.joined is None:
        return None, f"{answer.note}: showing EC2's view only"
    return answer.joined, answer.note


def _live_annex(
    ctx: AnnexContext, annex_name: str, project_live: list[awsops.AnnexInstance] | None = None
) -> list[awsops.AnnexInstance]:
    """The annex's live instances; from ``project_live`` when the caller already listed the project."""
    validate_annex_name(annex_name)
    if project_live is None:
        instances = awsops.list_annex_instances(ctx.clients, project_id=ctx.bundle.project_id, annex_name=annex_name)
    else:
        instances = [i for i in project_live if i.annex_name == annex_name]
    if not instances:
        raise BadInput(
            f"no live annex named {annex_name} in project {ctx.bundle.project_id}",
            "no pending or running instance carries that annex name",
            "See `condor_annex status` for the project's annexes.",
        )
    return instances


@dataclass
class ExtendResult:
    annex_name: str
    instance_ids: list[str]
    old_expiries: set[str]
    new_expiry: datetime
    token_reminted: bool


def extend_lease(ctx: AnnexContext, *, annex_name: str, new_expiry: datetime, condor_config: str | None) -> ExtendResult:
    validate_annex_name(annex_name)
    # One listing of the project serves both the annex and the spend cap.
    project_live = awsops.list_annex_instances(ctx.clients, project_id=ctx.bundle.project_id)
    instances = _live_annex(ctx, annex_name, project_live)
    new_expiry = lease.check_future(new_expiry, now=ctx.now)
    caps = ctx.bundle.caps
    earliest_start = min(i.launch_time for i in instances)
    lease.check_lease_cap(new_expiry, start=earliest_start, max_lease_hours=caps.max_lease_hours, what="extended lease")
    types = sorted({i.instance_type for i in project_live})
    quote = on_demand_prices(ctx.clients, ctx.bundle.region, types)
    others = [i for i in project_live if i.annex_name != annex_name]
    extended_cost = sum(
        quote.hourly.get(i.instance_type, max(quote.hourly.values()))
        * (new_expiry - ctx.now).total_seconds() / 3600
        for i in instances
    )
    committed = committed_spend(others, quote.hourly, ctx.now) + extended_cost
    if committed > caps.max_spend_usd + 1e-9:
        raise BadInput(
            f"extending would commit ${committed:,.2f}, which breaks the project's spend cap "
            f"(max_spend_usd = {caps.max_spend_usd:,.2f})",
            f"{len(instances)} instance(s) until {lease.format_local(new_expiry)}",
            "Choose an earlier expiry, terminate part of the project's annexes, or ask for a higher cap.",
        )
    reminted = _remint_token(ctx, annex_name, new_expiry, condor_config)
    awsops.set_expiry_tags(ctx.clients, [i.instance_id for i in instances], lease.to_tag(new_expiry))
    return ExtendResult(annex_name, [i.instance_id for i in instances], {i.expiry_tag or "" for i in instances}, new_expiry, reminted)


def _remint_token(ctx: AnnexContext, annex_name: str, new_expiry: datetime, condor_config: str | None) -> bool:
    """An annex that runs on an IDTOKEN gets a new one lasting to the new lease end."""
    import botocore.exceptions

    prefix = contract.annex_prefix(ctx.bundle.project_id, annex_name)
    try:
        ctx.clients.s3.head_object(Bucket=ctx.stack.bucket, Key=prefix + contract.TOKEN_OBJECT)
    except botocore.exceptions.ClientError:
        return False
    from annex_user.pool import pool_security, read_pool

    security = pool_security(
        read_pool(condor_config),
        annex_name=annex_name,
        subject=TOKEN_IDENTITY,
        issued_at=ctx.now,
        expires_at=new_expiry + TOKEN_MARGIN,
    )
    if security.kind != "idtoken":
        return False
    awsops.put_annex_objects(ctx.clients, bucket=ctx.stack.bucket, prefix=prefix, objects={contract.TOKEN_OBJECT: security.payload})
    return True


@dataclass
class TerminateResult:
    annex_name: str
    instance_ids: list[str]
    objects_removed: int


def find_annex(ctx: AnnexContext, annex_name: str) -> list[awsops.AnnexInstance]:
    return _live_annex(ctx, annex_name)


def terminate_annex(ctx: AnnexContext, instances: list[awsops.AnnexInstance], annex_name: str) -> TerminateResult:
    ids = [i.instance_id for i in instances]
    awsops.terminate_instances(ctx.clients, ids)
    removed = awsops.delete_annex_objects(
        ctx.clients, bucket=ctx.stack.bucket, prefix=contract.annex_prefix(ctx.bundle.project_id, annex_name)
    )
    return TerminateResult(annex_name, ids, removed)
