"""Launch an annex: plan (every check, nothing changed), then upload its configuration and fleet it."""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from annex_common.errors import AnnexError, AwsFailure, BadInput
from annex_user import awsops, expiry as lease
from annex_user.context import AnnexContext, require_project
from annex_user.pricing import PriceQuote, on_demand_prices, spot_prices
from templates import contract

ANNEX_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
TOKEN_MARGIN = timedelta(hours=1)
# The identity HTCondor's default security policy lets advertise a startd (the same one pool
# password authentication yields); the token's scopes still limit it to advertising and reading.
TOKEN_IDENTITY = "condor_pool"
MAX_FLEET_ROUNDS = 6
CAPACITY_CODES = {
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "Unsupported",
    "UnfulfillableCapacity",
    "InsufficientFreeAddressesInSubnet",
    "SpotMaxPriceTooLow",
    "MaxSpotInstanceCountExceeded",
}

Progress = Callable[[str], None]


@dataclass(frozen=True)
class LaunchRequest:
    project_id: str
    expiry: datetime
    count: int
    annex_name: str | None = None
    instance_type: str | None = None
    spot: bool = False
    idle_minutes: int = 15
    condor_config: str | None = None
    start_owner: str | None = None


@dataclass
class LaunchPlan:
    project_id: str
    annex_name: str
    owner: str
    count: int
    expiry: datetime
    lease_hours: float
    instance_types: list[str]
    pools: list[tuple[str, str]]
    prices: PriceQuote
    idle_seconds: int
    spot: bool
    live_instances: int
    committed_spend: float
    security_description: str = ""
    node_objects: dict[str, bytes] = field(default_factory=dict, repr=False)
    collector_host: str = ""

    @property
    def hourly_low(self) -> float:
        return min(self.prices.hourly[t] for t in self.instance_types) * self.count

    @property
    def hourly_high(self) -> float:
        return max(self.prices.hourly[t] for t in self.instance_types) * self.count

    @property
    def most_cost(self) -> float:
        return self.hourly_high * self.lease_hours

    @property
    def tags(self) -> dict[str, str]:
        return {
            contract.TAG_ANNEX_NAME: self.annex_name,
            contract.TAG_PROJECT: self.project_id,
            contract.TAG_EXPIRY: lease.to_tag(self.expiry),
            contract.TAG_IDLE: str(self.idle_seconds),
            contract.TAG_OWNER: self.owner,
        }


@dataclass
class LaunchResult:
    plan: LaunchPlan
    instance_ids: list[str]
    by_type: dict[str, int]
    capacity_errors: list[tuple[str, str, str, str]]
    rounds: int
    duplicates_ended: int = 0

    @property
    def shortfall(self) -> int:
        return self.plan.count - len(self.instance_ids)


def validate_annex_name(name: str) -> str:
    if not ANNEX_NAME_RE.match(name or ""):
        raise BadInput(
            f"annex name {name!r} is not allowed",
            "use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
            "Pass another --annex-name.",
        )
    return name


def default_annex_name(project_id: str, now: datetime) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "-", project_id)[:40].strip("-._") or "annex"
    return f"{base}-{now:%Y%m%d-%H%M%S}"


def validate_count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise BadInput(
            f"--instances {count} is not a positive whole number",
            "an annex needs at least one instance",
            "Pass for example --instances 16.",
        )
    return count


def validate_idle(minutes: int) -> int:
    if minutes < 1 or minutes > 24 * 60:
        raise BadInput(
            f"--idle {minutes} is out of range",
            "the idle shutdown must be between 1 minute and 24 hours",
            "Pass for example --idle 15.",
        )
    return minutes


def plan_launch(ctx: AnnexContext, request: LaunchRequest) -> LaunchPlan:
    """Every check a launch needs, reading only: raises BadInput with nothing changed."""
    bundle, stack = ctx.bundle, ctx.stack
    project = require_project(bundle, request.project_id)
    count = validate_count(request.count)
    idle_minutes = validate_idle(request.idle_minutes)
    annex_name = validate_annex_name(request.annex_name or default_annex_name(project, ctx.now))
    expiry = lease.check_future(request.expiry, now=ctx.now)
    lease.check_lease_cap(expiry, start=ctx.now, max_lease_hours=bundle.caps.max_lease_hours)
    offered = stack.instance_types
    if request.instance_type:
        if request.instance_type not in offered:
            raise BadInput(
                f"instance type {request.instance_type} is not offered by this region's annex stack",
                f"the stack offers {', '.join(offered)}",
                "Choose one of those with --instance-type, or omit it to let the fleet choose.",
            )
        types = [request.instance_type]
    else:
        types = [t for t in offered if t in stack.launch_templates]
    if count > bundle.caps.max_instances:
        raise BadInput(
            f"{count} instances is over the project's instance cap (max_instances = {bundle.caps.max_instances})",
            "the cap limits how many instances the project may have alive at once",
            f"Ask for at most {bundle.caps.max_instances}, or ask your pool administrator to raise the cap.",
        )
    live = awsops.list_annex_instances(ctx.clients, project_id=project)
    in_use = [i for i in live if i.annex_name == annex_name]
    if in_use:
        raise BadInput(
            f"the annex name {annex_name} is already in use",
            f"it has {len(in_use)} live instance(s): {', '.join(i.instance_id for i in in_use[:10])}"
            + (" …" if len(in_use) > 10 else ""),
            "See `condor_annex status --annex-name NAME`; extend or terminate it, or pick another --annex-name.",
        )
    if len(live) + count > bundle.caps.max_instances:
        raise BadInput(
            f"{count} more instances would break the project's instance cap (max_instances = {bundle.caps.max_instances})",
            f"the project already has {len(live)} live instance(s)",
            f"Ask for at most {max(bundle.caps.max_instances - len(live), 0)}, or end another annex first.",
        )
    # One price lookup covers the types this annex may use and those the project already runs;
    # live instances are counted at on-demand prices, the most they can cost.
    on_demand = on_demand_prices(ctx.clients, bundle.region, sorted(set(types) | {i.instance_type for i in live}))
    prices = spot_prices(ctx.clients, bundle.region, types, stack.availability_zones) if request.spot else on_demand
    lease_hours = (expiry - ctx.now).total_seconds() / 3600
    committed = committed_spend(live, on_demand.hourly, ctx.now)
    owner = request.start_owner or getpass.getuser()
    plan = LaunchPlan(
        project_id=project,
        annex_name=annex_name,
        owner=bundle.user,
        count=count,
        expiry=expiry,
        lease_hours=lease_hours,
        instance_types=types,
        pools=[(t, subnet) for t in types for subnet in stack.subnets],
        prices=prices,
        idle_seconds=idle_minutes * 60,
        spot=request.spot,
        live_instances=len(live),
        committed_spend=committed,
    )
    if committed + plan.most_cost > bundle.caps.max_spend_usd + 1e-9:
        raise BadInput(
            f"this annex could cost up to ${plan.most_cost:,.2f}, which would break the project's spend cap "
            f"(max_spend_usd = {bundle.caps.max_spend_usd:,.2f})",
            f"the project's live annexes can still cost ${committed:,.2f}",
            "Ask for fewer instances or a shorter lease, or ask your pool administrator to raise the cap.",
        )
    attach_node_configuration(plan, request.condor_config, start_owner=owner, issued_at=ctx.now)
    return plan


def committed_spend(live: list[awsops.AnnexInstance], hourly: dict[str, float], now: datetime) -> float:
    """The most the project's live instances can still cost: price × remaining lease."""
    ceiling = max(hourly.values(), default=0.0)
    total = 0.0
    for instance in live:
        ends = lease.from_tag(instance.expiry_tag)
        if ends is None or ends <= now:
            continue  # the enforcer ends these at its next sweep
        total += hourly.get(instance.instance_type, ceiling) * (ends - now).total_seconds() / 3600
    return total


def attach_node_configuration(plan: LaunchPlan, condor_config: str | None, *, start_owner: str, issued_at: datetime) -> None:
    """Read the pool, choose its security material, render the node's configuration."""
    from annex_user.node_config import NodeConfigInputs, render_condor_config, render_node_env
    from annex_user.pool import pool_security, read_pool

    pool = read_pool(condor_config)
    security = pool_security(
        pool,
        annex_name=plan.annex_name,
        subject=TOKEN_IDENTITY,
        issued_at=issued_at,
        expires_at=plan.expiry + TOKEN_MARGIN,
    )
    inputs = NodeConfigInputs(
        annex_name=plan.annex_name,
        project_id=plan.project_id,
        owner=start_owner,
        collector_host=pool.collector_host,
        trust_domain=pool.trust_domain,
        idle_seconds=plan.idle_seconds,
        security=security.kind,
    )
    plan.collector_host = pool.collector_host
    plan.security_description = security.description
    plan.node_objects = {
        contract.NODE_CONFIG_OBJECT: render_condor_config(inputs).encode(),
        contract.NODE_ENV_OBJECT: render_node_env(inputs).encode(),
        security.object_name: security.payload,
    }


def dry_run(ctx: AnnexContext, plan: LaunchPlan) -> str:
    itype, subnet = plan.pools[0]
    return awsops.check_launch_permission(
        ctx.clients, launch_template=ctx.stack.launch_templates[itype], subnet=subnet, tags=plan.tags
    )


def execute_launch(ctx: AnnexContext, plan: LaunchPlan, progress: Progress) -> LaunchResult:
    """Upload the configuration, then fleet until the count is met or every pool has failed.

    A launch that ends with no instance takes its configuration back: nothing is left half-done.
    """
    prefix = contract.annex_prefix(plan.project_id, plan.annex_name)
    progress(f"Uploading the annex configuration to s3://{ctx.stack.bucket}/{prefix}")
    awsops.put_annex_objects(ctx.clients, bucket=ctx.stack.bucket, prefix=prefix, objects=plan.node_objects)
    try:
        result = _fleet_rounds(ctx, plan, progress)
    except AnnexError:
        _withdraw_configuration_if_unused(ctx, plan, prefix)
        raise
    if not result.instance_ids:
        _withdraw_configuration_if_unused(ctx, plan, prefix)
    return result


def _fleet_rounds(ctx: AnnexContext, plan: LaunchPlan, progress: Progress) -> LaunchResult:
    result = LaunchResult(plan, [], {}, [], 0)
    pools = list(plan.pools)
    while len(result.instance_ids) < plan.count and pools and result.rounds < MAX_FLEET_ROUNDS:
        result.rounds += 1
        asked = min(plan.count - len(result.instance_ids), awsops.FLEET_CHUNK)
        progress(f"Requesting {asked} instance(s) from {len(pools)} pool(s) (round {result.rounds})")
        outcome = awsops.launch_fleet(
            ctx.clients,
            count=asked,
            launch_templates={t: ctx.stack.launch_templates[t] for t in plan.instance_types},
            pools=pools,
            tags=plan.tags,
            spot=plan.spot,
        )
        result.instance_ids.extend(outcome.instance_ids)
        if outcome.retried:
            result.duplicates_ended += end_duplicates(ctx, plan, result.instance_ids, progress)
        for itype, _subnet in outcome.placements.values():
            result.by_type[itype] = result.by_type.get(itype, 0) + 1
        progress(f"  {len(outcome.instance_ids)} launched, {len(result.instance_ids)}/{plan.count} in all")
        failed = _failed_pools(outcome, result, progress)
        pools = [p for p in pools if p not in failed]
        if not outcome.instance_ids and not failed:
            break  # nothing launched and nothing to exclude: another round would do the same
    return result


def _failed_pools(outcome: awsops.FleetOutcome, result: LaunchResult, progress: Progress) -> set[tuple[str, str]]:
    """Pools that ran out of capacity; any other fleet error is a refusal and ends the launch."""
    failed = {(t, s) for t, s, code, _ in outcome.errors if code in CAPACITY_CODES or not code}
    for error in outcome.errors:
        result.capacity_errors.append(error)
        progress(f"  no capacity: {error[0]} in {error[1]} ({error[2]})")
    if outcome.errors and not failed:
        raise AwsFailure(
            "the fleet request was refused",
            "; ".join(f"{code}: {message}" for _, _, code, message in outcome.errors[:3]),
            "Check your credentials' permissions (`condor_annex --dry-run ...`).",
        )
    return failed


def _withdraw_configuration_if_unused(ctx: AnnexContext, plan: LaunchPlan, prefix: str) -> None:
    """Remove the uploaded configuration when no instance of the annex exists; if AWS cannot be
    asked now, the enforcer removes configuration without instances at a later sweep."""
    try:
        if not awsops.list_annex_instances(ctx.clients, project_id=plan.project_id, annex_name=plan.annex_name):
            awsops.delete_annex_objects(ctx.clients, bucket=ctx.stack.bucket, prefix=prefix)
    except AnnexError:
        pass


def end_duplicates(ctx: AnnexContext, plan: LaunchPlan, launched: list[str], progress: Progress) -> int:
    """After a retried fleet request, make sure no second set of instances was launched.

    AWS makes the retry of a CreateFleet whose answer was lost idempotent through its client
    token; an endpoint that does not would launch the annex twice. Instances of this annex that
    the answers did not name are such duplicates: they are ended at once, so nothing is paid twice.
    """
    known = set(launched)
    present = awsops.list_annex_instances(ctx.clients, project_id=plan.project_id, annex_name=plan.annex_name)
    extra = [i.instance_id for i in present if i.instance_id not in known]
    if extra:
        progress(f"  a retried fleet request launched {len(extra)} duplicate instance(s); terminating them")
        awsops.terminate_instances(ctx.clients, extra)
    return len(extra)
