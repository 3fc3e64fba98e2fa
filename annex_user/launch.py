"""Launch an annex through the broker: plan (the broker checks, nothing changes), then launch.

What the client checks here is only what it can know alone (the shape of its own input); every
rule that protects money (caps, prices, the stack's types) is the broker's, on its side.
"""

from __future__ import annotations

import getpass
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Mapping

from annex_cloud.broker.requests import (
    ANNEX_NAME_RE,
    MAX_COUNT,
    MAX_IDLE_MINUTES,
    MIN_IDLE_MINUTES,
)
from annex_cloud.pool_tokens import TOKEN_IDENTITY, TOKEN_MARGIN
from annex_common.errors import AnnexError, AwsFailure, BadInput
from annex_common.times import local_times_in
from annex_user import expiry as lease
from annex_user import pending
from annex_user.broker_client import first_broken
from annex_user.context import AnnexContext, require_project
from annex_user.pending import PendingLaunch

__all__ = ["ANNEX_NAME_RE", "LaunchRequest", "LaunchPlan", "LaunchResult", "plan_launch", "resume_plan", "execute_launch"]


@dataclass(frozen=True)
class LaunchRequest:
    project_id: str
    expiry: datetime
    count: int
    annex_name: str | None = None
    instance_type: str | None = None
    spot: bool = False
    idle_minutes: int = 15
    # Her own pool's CONDOR_CONFIG, only where her project may bring its own key (--own-pool):
    # condor_annex then reads that pool's key and mints the token. None: the recorded pool, no key.
    own_pool: str | None = None
    start_owner: str | None = None


@dataclass
class LaunchPlan:
    """The broker's plan, and the pool the annex joins: the one recorded for her project (the
    broker mints the token), or, with --own-pool, her own (this machine mints it)."""

    broker: dict[str, Any]  # the broker's plan_launch answer
    params: dict[str, Any]  # what the launch request will say (no security material yet)
    expiry: datetime
    collector_host: str
    security_description: str
    token_id: str | None  # her own pool's token id; the broker names the recorded pool's at launch
    pool: Any = None  # annex_user.pool.PoolInfo, her own pool only
    source: Any = None  # annex_user.pool.SecuritySource (holds a secret: never shown), her own pool only
    # The launch request's id: the broker carries out one id once, and answers it again.
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    resumed: bool = False  # the same command's earlier request, sent again for its answer

    @property
    def committed_after(self) -> float:
        """What the project's live annexes could still cost once this one runs: the figure its
        spend cap is checked against, in the table and the JSON alike."""
        return float(self.broker["committed_spend"]) + float(self.broker["most_cost"])

    def __getattr__(self, name: str) -> Any:
        # The broker's figures read as attributes: plan.count, plan.most_cost, ...
        try:
            return self.__dict__["broker"][name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class LaunchResult:
    plan: LaunchPlan
    answer: dict[str, Any]

    @property
    def instance_ids(self) -> list[str]:
        return list(self.answer.get("instance_ids", []))

    @property
    def by_type(self) -> dict[str, int]:
        return dict(self.answer.get("by_type", {}))

    @property
    def capacity_errors(self) -> list[dict[str, str]]:
        return list(self.answer.get("errors", []))

    @property
    def shortfall(self) -> int:
        return int(self.plan.count) - len(self.instance_ids)


def validate_annex_name(name: str) -> str:
    if not ANNEX_NAME_RE.fullmatch(name or ""):
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
    if count > MAX_COUNT:
        raise BadInput(
            f"--instances {count:,} is more than one annex may have",
            f"the broker launches at most {MAX_COUNT:,} instances per annex",
            f"Ask for at most {MAX_COUNT:,}; launch more as further annexes (another --annex-name), "
            "within your project's caps.",
        )
    return count


def validate_idle(minutes: int) -> int:
    if not MIN_IDLE_MINUTES <= minutes <= MAX_IDLE_MINUTES:
        raise BadInput(
            f"--idle {minutes} is out of range",
            "the idle shutdown must be between 1 minute and 24 hours",
            "Pass for example --idle 15.",
        )
    return minutes


def plan_launch(ctx: AnnexContext, request: LaunchRequest, *, show_broken: bool = False) -> LaunchPlan:
    """The broker's verdict on the launch, and the pool the annex would join; nothing changes,
    nothing is minted. No pool secret is read unless she brings her own pool (--own-pool). A plan
    that breaks a cap is refused (BadInput), or with ``show_broken`` returned to be shown, its
    ``breaks`` naming the caps (``refusal_of``)."""
    project = require_project(ctx.bundle, request.project_id)
    count = validate_count(request.count)
    idle = validate_idle(request.idle_minutes)
    name = validate_annex_name(request.annex_name or default_annex_name(project, ctx.now))
    expiry = lease.check_future(request.expiry, now=ctx.now)
    params: dict[str, Any] = {
        "project_id": project,
        "annex_name": name,
        "count": count,
        "expiry": lease.to_tag(expiry),
        "idle_minutes": idle,
        "spot": request.spot,
        "instance_types": [request.instance_type] if request.instance_type else None,
        **({"own_pool": True} if request.own_pool is not None else {}),
    }
    answer = ctx.broker.ask("plan_launch", params, f"could not plan annex {name}")
    broken = first_broken(answer, f"could not plan annex {name}")
    if broken is not None and not show_broken:
        raise broken
    params = {**params, "job_owner": request.start_owner or getpass.getuser()}
    if request.own_pool is None:
        recorded = answer.get("pool") or {}
        return LaunchPlan(
            broker=answer, params=params, expiry=expiry, collector_host=str(recorded.get("collector_host", "")),
            security_description=local_times_in(str(recorded.get("description", ""))), token_id=None,
        )
    return _own_pool_plan(answer, params, expiry, request.own_pool, name)


def _own_pool_plan(answer: dict[str, Any], params: dict[str, Any], expiry: datetime, condor_config: str,
                   name: str, token_id: str | None = None) -> LaunchPlan:
    """Her own pool (where her project may bring its key): its configuration and key, read here;
    the token's id is new, or the earlier request's when it is sent again."""
    from annex_user.pool import describe_token, read_pool, security_source

    pool = read_pool(condor_config)
    source = security_source(pool, annex_name=name)
    token_id = (token_id or secrets.token_hex(16)) if source.kind == "idtoken" else None
    description = (
        describe_token(pool, source, subject=TOKEN_IDENTITY, expires_at=expiry + TOKEN_MARGIN, token_id=token_id)
        if token_id else source.description
    )
    return LaunchPlan(
        broker=answer, params=params, expiry=expiry, collector_host=pool.collector_host,
        security_description=description, token_id=token_id, pool=pool, source=source,
    )


def command_key(ctx: AnnexContext, options: Mapping[str, Any]) -> str:
    """What makes two launch commands the same: the options as typed (``--duration 5`` twice is
    the same command, though its lease end moves), the bundle's identity and the pool."""
    bundle = ctx.bundle
    return pending.command_key(
        {**options, "region": bundle.region, "stack_name": bundle.stack_name, "user": bundle.user}
    )


def unanswered_launch(command: str) -> PendingLaunch | None:
    return pending.find(command)


def resume_plan(ctx: AnnexContext, earlier: PendingLaunch, condor_config: str | None) -> LaunchPlan:
    """The plan of a launch this command sent before and got no answer to (annex_user.pending):
    the same request, id and all, that the scientist said yes to. The broker is not asked for a
    new plan: it answers the request itself. Only for her own pool is the pool read again, to
    mint its material."""
    expiry = lease.from_tag(earlier.params["expiry"])
    assert expiry is not None
    if not earlier.params.get("own_pool"):
        recorded = earlier.plan.get("pool") or {}
        return LaunchPlan(
            broker=earlier.plan, params=earlier.params, expiry=expiry,
            collector_host=str(recorded.get("collector_host", "")),
            security_description=local_times_in(str(recorded.get("description", ""))), token_id=None,
            request_id=earlier.request_id, resumed=True,
        )
    plan = _own_pool_plan(earlier.plan, earlier.params, expiry, condor_config or "", earlier.params["annex_name"],
                          token_id=earlier.token_id)
    return replace(plan, request_id=earlier.request_id, resumed=True)


def execute_launch(ctx: AnnexContext, plan: LaunchPlan, command: str | None = None) -> LaunchResult:
    """Mint the annex's material now that she has said yes, and ask the broker to launch.

    The request id makes the request safe to send twice: the broker answers a retry with the
    first launch's result and never launches a second annex. Until the broker answers, the id
    is kept on this machine under the ``command``'s key (none without one), so the same command
    run again (after Ctrl-C or a lost answer) sends the same request.
    """
    if command is not None:
        pending.remember(pending.PendingLaunch(
            command=command, request_id=plan.request_id, params=plan.params, plan=plan.broker,
            token_id=plan.token_id, sent_at=time.time(),
        ))
    params = {**plan.params, "request_id": plan.request_id}
    if plan.source is not None:
        params = {**{k: v for k, v in params.items() if k not in ("job_owner", "own_pool")},
                  "pool": _own_pool_contact(ctx, plan)}
    try:
        answer = ctx.broker.ask("launch", params, f"could not launch annex {plan.params['annex_name']}")
    except BadInput:
        _answered(command)  # refused: the broker's answer, and nothing was launched
        raise
    _answered(command)
    result = LaunchResult(plan, answer)
    if answer.get("replayed") and result.instance_ids and not answer.get("live_instance_ids"):
        # The broker's record answers for a launch carried out earlier; what it launched has ended.
        raise AnnexError(
            f"the launch of annex {plan.params['annex_name']} sent earlier (request {plan.request_id}) was carried out "
            "and has since ended",
            f"none of its {len(result.instance_ids)} instance(s) is live now: the annex was terminated or its lease "
            "ended; nothing new was launched",
            "Run the same command again to launch anew: this machine no longer keeps that request.",
        )
    if not result.instance_ids:
        raise AwsFailure(
            f"no instance of annex {plan.params['annex_name']} could be launched",
            answer.get("stopped_by") or "every capacity pool ran out",
            "Try again later, with --spot or another --instance-type.",
        )
    return result


def _answered(command: str | None) -> None:
    if command is not None:
        pending.forget(command)


def refusal_of(plan: LaunchPlan) -> BadInput | None:
    """What the broker would refuse in this plan (the first cap it breaks), or None."""
    return first_broken(plan.broker, f"could not plan annex {plan.params['annex_name']}")


def _own_pool_contact(ctx: AnnexContext, plan: LaunchPlan) -> dict[str, Any]:
    """Her own pool's contact and the token minted here with its key (the broker checks it)."""
    import base64

    from annex_user.pool import pool_material

    security = pool_material(
        plan.pool, plan.source, annex_name=plan.params["annex_name"], subject=TOKEN_IDENTITY,
        issued_at=ctx.now, expires_at=plan.expiry + TOKEN_MARGIN, token_id=plan.token_id,
    )
    return {
        "collector_host": plan.pool.collector_host,
        "trust_domain": plan.pool.trust_domain,
        "job_owner": plan.params["job_owner"],
        "security": security.kind,
        "material": base64.b64encode(security.payload).decode(),
        # The broker records the id (never the token) for status and early revocation.
        **({"token_id": plan.token_id} if security.kind == "idtoken" else {}),
    }


def plan_summary(plan: LaunchPlan) -> dict[str, Any]:
    """The plan as a script reads it: what would run, until when, and what it can cost."""
    return {
        "annex_name": plan.annex_name,
        "project_id": plan.project_id,
        "owner": plan.owner,
        "count": plan.count,
        "instance_types": list(plan.instance_types),
        "spot": plan.spot,
        "expiry": plan.broker["expiry"],
        "lease_hours": round(plan.lease_hours, 4),
        "hourly_price_usd": {"low": round(plan.hourly_low, 6), "high": round(plan.hourly_high, 6)},
        "prices": plan.prices,
        "price_source": plan.price_source,
        "most_cost_usd": round(plan.most_cost, 4),
        "committed_spend_usd": round(plan.committed_after, 4),
        "caps": plan.caps,
        "security": plan.source.kind if plan.source is not None else (plan.broker.get("pool") or {}).get("security"),
        "pool": "own" if plan.source is not None else (plan.broker.get("pool") or {}).get("source"),
        "token_id": plan.token_id,
        "collector_host": plan.collector_host,
        "breaks": list(plan.broker.get("breaks") or []),
    }


def launch_summary(result: LaunchResult) -> dict[str, Any]:
    """What a launch did, for a script: the plan's figures and the instances that run."""
    return {
        "dry_run": False,
        **plan_summary(result.plan),
        "instance_ids": result.instance_ids,
        "by_type": result.by_type,
        "shortfall": result.shortfall,
        "fleet_errors": result.capacity_errors,
        "stopped_by": result.answer.get("stopped_by") or None,
        "replayed": bool(result.answer.get("replayed")),
        "token_id": result.answer.get("token_id") or result.plan.token_id,
    }
